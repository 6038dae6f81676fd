from django.urls import path

from nodes.api import views

urlpatterns = [
    path("speakers/<uuid:speaker_id>/warm", views.SpeakerWarmView.as_view(), name="speaker-warm"),
    path("nodes", views.NodeListView.as_view(), name="nodes"),
]
