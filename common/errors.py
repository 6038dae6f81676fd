"""Domain errors that the API turns into 4xx answers with a machine-readable code."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status_code = 400
    code = "invalid_request"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class BlobStoreUnavailable(ServiceError):
    status_code = 503
    code = "blob_store_unavailable"


class UploadTooLarge(ServiceError):
    status_code = 413
    code = "upload_too_large"


class PreflightRejected(ServiceError):
    status_code = 422
    code = "preflight_failed"
