"""Node pools: which tenants the nodes of a pool serve (``NODE_POOLS``, ``NODE_POOL``).

Every process reads the same ``NODE_POOLS``: the orchestrator routes a tenant's enrollments,
re-warms and diarization jobs only to live nodes of the tenant's pool, and a node loads and
warms only the speakers of its pool's tenants. A tenant that no pool names belongs to the
default pool, so with ``NODE_POOLS`` unset every node serves every tenant.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q

from nodes import registry
from tenancy.models import Tenant

DEFAULT_POOL = registry.DEFAULT_POOL
POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TENANT_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")


class InvalidNodePools(ImproperlyConfigured):
    """``NODE_POOLS`` or ``NODE_POOL`` cannot be used; the process refuses to start."""


@dataclass(frozen=True)
class NodePools:
    """The named pools and their tenants' slugs; every other tenant is the default pool's."""

    tenants: Mapping[str, frozenset[str]]

    @property
    def names(self) -> list[str]:
        return sorted({DEFAULT_POOL, *self.tenants})

    def serves_every_tenant(self, pool: str) -> bool:
        """Only the default pool does, and only while no other pool takes a tenant from it."""
        return pool == DEFAULT_POOL and all(name == DEFAULT_POOL for name in self.tenants)

    def pool_of(self, tenant_slug: str) -> str:
        for pool, slugs in self.tenants.items():
            if tenant_slug in slugs:
                return pool
        return DEFAULT_POOL

    def served_by(self, pool: str, tenant_field: str = "tenant") -> Q:
        """A filter on a model with a tenant relation ``tenant_field``: the pool's tenants."""
        if pool != DEFAULT_POOL:
            return Q(**{f"{tenant_field}__slug__in": sorted(self.tenants.get(pool, ()))})
        elsewhere = sorted(
            slug for name, slugs in self.tenants.items() if name != DEFAULT_POOL for slug in slugs
        )
        return ~Q(**{f"{tenant_field}__slug__in": elsewhere}) if elsewhere else Q()


def parse_node_pools(text: str) -> NodePools:
    """``pool=tenant,tenant;pool=tenant``: pool names and the slugs of the tenants they serve."""
    tenants: dict[str, frozenset[str]] = {}
    placed: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        pool, sep, listed = (part.strip() for part in entry.partition("="))
        if not sep:
            raise InvalidNodePools(
                f"NODE_POOLS: {entry!r} is not pool=tenant,tenant (pools are separated by ';')."
            )
        if not POOL_NAME.match(pool):
            raise InvalidNodePools(
                f"NODE_POOLS: {pool!r} is not a pool name (1-64 letters, digits, '.', '_' or "
                "'-', starting with a letter or digit)."
            )
        if pool in tenants:
            raise InvalidNodePools(f"NODE_POOLS: pool {pool} is listed twice.")
        slugs = [s.strip() for s in listed.split(",") if s.strip()]
        if not slugs:
            raise InvalidNodePools(f"NODE_POOLS: pool {pool} names no tenant.")
        for slug in slugs:
            if not TENANT_SLUG.match(slug):
                raise InvalidNodePools(f"NODE_POOLS: {slug!r} (pool {pool}) is not a tenant slug.")
            if slug in placed:
                raise InvalidNodePools(
                    f"NODE_POOLS: tenant {slug} is in pools {placed[slug]} and {pool}; "
                    "a tenant belongs to one pool."
                )
            placed[slug] = pool
        tenants[pool] = frozenset(slugs)
    return NodePools(tenants)


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> NodePools:
    return parse_node_pools(text)


def configured_pools() -> NodePools:
    return _parsed(settings.NODE_POOLS)


def this_node_pool() -> str:
    """The pool a node started in this process belongs to (``NODE_POOL``)."""
    pool: str = settings.NODE_POOL
    names = configured_pools().names
    if pool not in names:
        raise InvalidNodePools(
            f"NODE_POOL {pool!r} is not a pool of NODE_POOLS (pools: {', '.join(names)})."
        )
    return pool


def check_configuration() -> None:
    """Refuses a process whose pool settings cannot be used (called as Django starts)."""
    this_node_pool()


def unknown_tenant_slugs() -> list[str]:
    """Slugs ``NODE_POOLS`` places that no tenant has (a typo, or a tenant not created yet):
    until one exists, nothing of it is routed."""
    named = {slug for slugs in configured_pools().tenants.values() for slug in slugs}
    known = set(Tenant.objects.filter(slug__in=named).values_list("slug", flat=True))
    return sorted(named - known)


def pool_of_tenant(tenant_id: uuid.UUID | str) -> str:
    pools = configured_pools()
    if not pools.tenants:
        return DEFAULT_POOL
    slug = Tenant.objects.values_list("slug", flat=True).get(id=tenant_id)
    return pools.pool_of(slug)


def tenant_ids_served_by(pool: str) -> list[uuid.UUID] | None:
    """The ids of the pool's tenants; None when the pool serves every tenant."""
    pools = configured_pools()
    if pools.serves_every_tenant(pool):
        return None
    return [
        tenant_id
        for tenant_id, slug in Tenant.objects.values_list("id", "slug")
        if pools.pool_of(slug) == pool
    ]


def tenant_candidate_node_ids(tenant_id: uuid.UUID | str) -> list[str]:
    """Live pyannote nodes of the tenant's pool: where its speakers and jobs go."""
    return registry.candidate_node_ids(pool=pool_of_tenant(tenant_id))
