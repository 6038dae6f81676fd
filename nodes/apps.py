from django.apps import AppConfig


class NodesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "nodes"

    def ready(self) -> None:
        # Enrollment and erasure reach the nodes through this (enrollment sits below nodes).
        from enrollment import distribution
        from nodes import pools
        from nodes.services.orchestrator import NodeDistribution

        distribution.install(NodeDistribution())
        # Every process routes by the pools, so a bad NODE_POOLS stops any of them at start.
        pools.check_configuration()
