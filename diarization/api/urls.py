from django.urls import path

from diarization.api import views

urlpatterns = [
    path("diarize", views.DiarizeView.as_view(), name="diarize"),
    path("diarize/<uuid:job_id>", views.DiarizeJobView.as_view(), name="diarize-job"),
    path("diarize/<uuid:job_id>/result", views.DiarizeResultView.as_view(), name="diarize-result"),
]
