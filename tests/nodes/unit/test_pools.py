"""NODE_POOLS as written by an operator: what it places where, and what it refuses."""

from __future__ import annotations

import pytest

from nodes.pools import (
    DEFAULT_POOL,
    InvalidNodePools,
    check_configuration,
    configured_pools,
    parse_node_pools,
    this_node_pool,
)


def test_unset_means_one_default_pool_serving_every_tenant():
    pools = parse_node_pools("")

    assert pools.names == [DEFAULT_POOL]
    assert pools.pool_of("acme") == DEFAULT_POOL
    assert pools.serves_every_tenant(DEFAULT_POOL)


def test_named_tenants_go_to_their_pool_and_the_rest_to_the_default_pool():
    pools = parse_node_pools(" eu = acme, globex ; us=initech;")

    assert pools.names == [DEFAULT_POOL, "eu", "us"]
    assert pools.pool_of("globex") == "eu"
    assert pools.pool_of("initech") == "us"
    assert pools.pool_of("umbrella") == DEFAULT_POOL
    assert not pools.serves_every_tenant(DEFAULT_POOL)
    assert not pools.serves_every_tenant("eu")


def test_tenants_named_under_the_default_pool_keep_it_serving_everyone():
    pools = parse_node_pools("default=acme")

    assert pools.pool_of("acme") == DEFAULT_POOL
    assert pools.serves_every_tenant(DEFAULT_POOL)


def test_the_filters_select_each_pools_tenants_by_slug():
    pools = parse_node_pools("eu=acme,globex;us=initech")

    assert str(pools.served_by("eu")) == str(parse_node_pools("eu=globex,acme").served_by("eu"))
    assert "('tenant__slug__in', ['acme', 'globex'])" in str(pools.served_by("eu"))
    default = str(pools.served_by(DEFAULT_POOL, "speaker__tenant"))
    assert default.startswith("(NOT") and "['acme', 'globex', 'initech']" in default
    assert str(parse_node_pools("").served_by(DEFAULT_POOL)) == "(AND: )"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("eu", "'eu' is not pool=tenant,tenant"),
        ("e u=acme", "'e u' is not a pool name"),
        ("=acme", "'' is not a pool name"),
        ("-eu=acme", "'-eu' is not a pool name"),
        ("eu=", "pool eu names no tenant"),
        ("eu= , ", "pool eu names no tenant"),
        ("eu=acme;eu=globex", "pool eu is listed twice"),
        ("eu=acme;us=acme", "tenant acme is in pools eu and us"),
        ("eu=acme;default=acme", "tenant acme is in pools eu and default"),
        ("eu=ac me", "'ac me' (pool eu) is not a tenant slug"),
        ("eu=acme.corp", "'acme.corp' (pool eu) is not a tenant slug"),
    ],
)
def test_a_malformed_setting_is_refused_with_what_is_wrong(text, message):
    with pytest.raises(InvalidNodePools) as refused:
        parse_node_pools(text)

    assert message in str(refused.value)
    assert str(refused.value).startswith("NODE_POOLS: ")


def test_a_node_pool_must_be_one_of_the_configured_pools(settings):
    settings.NODE_POOLS = "eu=acme"
    settings.NODE_POOL = "eu"
    assert this_node_pool() == "eu"
    assert configured_pools().pool_of("acme") == "eu"

    settings.NODE_POOL = "asia"
    with pytest.raises(InvalidNodePools, match=r"NODE_POOL 'asia' is not a pool of NODE_POOLS"):
        check_configuration()


def test_the_configuration_check_reports_a_malformed_node_pools(settings):
    settings.NODE_POOLS = "eu=acme;us=acme"

    with pytest.raises(InvalidNodePools, match="tenant acme is in pools eu and us"):
        check_configuration()
