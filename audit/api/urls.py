from django.urls import path

from audit.api import views

urlpatterns = [
    path("erasures", views.ErasureListView.as_view(), name="erasures"),
    path("erasures/<uuid:audit_id>", views.ErasureDetailView.as_view(), name="erasure-detail"),
    path("consent-records", views.ConsentRecordListView.as_view(), name="consent-records"),
    path("audit/events", views.AuditEventListView.as_view(), name="audit-events"),
    path("audit/verify", views.AuditVerifyView.as_view(), name="audit-verify"),
]
