from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from console import sign_in, views

app_name = "console"

urlpatterns = [
    path(
        "",
        RedirectView.as_view(pattern_name="console:speakers", http_method_names=["get"]),
        name="home",
    ),
    path("login/", sign_in.console_sign_in, name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("speakers/", views.speaker_list, name="speakers"),
    path("speakers/new/", views.speaker_enroll, name="enroll"),
    path("speakers/<uuid:speaker_id>/", views.speaker_detail, name="speaker"),
    path("speakers/<uuid:speaker_id>/status.json", views.speaker_status, name="speaker-status"),
    path("speakers/<uuid:speaker_id>/rewarm/", views.speaker_rewarm, name="rewarm"),
    path("speakers/<uuid:speaker_id>/erase/", views.speaker_erase, name="erase"),
    path("speakers/<uuid:speaker_id>/review/", views.speaker_review, name="review"),
    path(
        "speakers/<uuid:speaker_id>/recordings/<str:role>/",
        views.speaker_recording,
        name="recording",
    ),
    path("reviews/", views.review_queue, name="reviews"),
    path("nodes/", views.node_list, name="nodes"),
    path("consent-records/", views.consent_records, name="consent-records"),
    path("erasures/", views.erasures, name="erasures"),
    path("erasures/<uuid:audit_id>/", views.erasure_detail, name="erasure"),
    path("erasures/<uuid:audit_id>/status.json", views.erasure_status, name="erasure-status"),
    path("audit/", views.audit_trail, name="audit"),
    path("export/<str:name>.<str:fmt>", views.audit_export, name="export"),
]
