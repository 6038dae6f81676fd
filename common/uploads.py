"""Sizes of upload requests."""

# Room for the multipart framing and the form fields around the recordings.
MULTIPART_OVERHEAD_BYTES = 1024 * 1024
