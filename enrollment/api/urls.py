from django.urls import path

from enrollment.api import views

urlpatterns = [
    path("speakers", views.SpeakerCollectionView.as_view(), name="speakers"),
    path("speakers/<uuid:speaker_id>", views.SpeakerDetailView.as_view(), name="speaker-detail"),
    path(
        "speakers/<uuid:speaker_id>/review",
        views.SpeakerReviewView.as_view(),
        name="speaker-review",
    ),
    path(
        "speakers/<uuid:speaker_id>/consent/withdraw",
        views.ConsentWithdrawalView.as_view(),
        name="consent-withdraw",
    ),
]
