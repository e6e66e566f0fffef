"""Apps on commerce objects: only their merchant and environment, only within
their granted scopes, and their notes are attributed to them."""

from __future__ import annotations

import grpc
import pytest

from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import resources_pb2 as pb
from tests.commerce.support import Commerce
from tests.errors import grpc_error
from tests.installs.oauth_support import OAuthWorld, make_world


@pytest.fixture
def world(channel, db, new_partner, new_merchant) -> OAuthWorld:
    return make_world(channel, db, new_partner, new_merchant)


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_app_without_the_scope_is_refused_naming_the_scope(world: OAuthWorld):
    app = Commerce(world.channel, world.install(scope="orders:read").access_token, world.internal)
    details = grpc_error(refused(app.create_order))
    assert (details.code, details.reason) == ("PERMISSION_DENIED", "SCOPE_MISSING")
    assert details.metadata["scope"] == "orders:write"
    assert "orders:write" in details.message


def test_app_reads_and_writes_within_its_scopes_and_notes_are_attributed(world: OAuthWorld):
    token = world.install(scope="orders:read orders:write").access_token
    app = Commerce(world.channel, token, world.internal)
    merchant = Commerce(world.channel, world.merchant.test_key, world.internal)
    order = merchant.create_order()
    assert app.get(order.id).id == order.id
    noted = app.orders.AddOrderNote(
        orders_pb.AddOrderNoteRequest(id=order.id, text="Loyalty points added: 30"),
        metadata=app.auth,
    )
    author = noted.notes[0].author
    assert (author.kind, author.id, author.name) == (
        pb.ACTOR_KIND_APP,
        world.app.id,
        "Loyalty Stars",
    )
    last = merchant.timeline(order.id)[-1]
    assert last.actor.kind == pb.ACTOR_KIND_APP
    assert "Loyalty Stars" in last.summary


def test_test_token_never_sees_live_objects_and_the_reverse(world: OAuthWorld):
    test_app = Commerce(
        world.channel,
        world.install(scope="orders:read orders:write").access_token,
        world.internal,
    )
    live_app = Commerce(
        world.channel,
        world.install(scope="orders:read orders:write", environment="live").access_token,
        world.internal,
    )
    live_order = Commerce(world.channel, world.merchant.live_key, world.internal).create_order()
    test_order = test_app.create_order()
    assert test_order.environment == 1
    assert grpc_error(refused(lambda: test_app.get(live_order.id))).code == "NOT_FOUND"
    assert grpc_error(refused(lambda: live_app.get(test_order.id))).code == "NOT_FOUND"
    assert live_app.get(live_order.id).environment == 2


def test_app_of_another_merchant_sees_nothing(
    world: OAuthWorld, channel, db, new_partner, admin_key, accounts_stub
):
    from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
    from tests.conftest import MerchantCreds, bearer

    created = accounts_stub.CreateMerchant(
        accounts_pb.CreateMerchantRequest(
            merchant=accounts_pb.Merchant(
                name="Elsewhere", email=f"else-{world.app.id}@example.com"
            ),
            password="correct horse battery",
        ),
        metadata=bearer(admin_key),
    )
    keys = {k.environment: k.secret for k in created.secret_keys}
    other = MerchantCreds(created.id, keys[1], keys[2], f"else-{world.app.id}@example.com")
    other_world = make_world(channel, db, new_partner, other)
    foreign = Commerce(
        channel, other_world.install(scope="orders:read").access_token, world.internal
    )
    order = Commerce(channel, world.merchant.test_key, world.internal).create_order()
    assert grpc_error(refused(lambda: foreign.get(order.id))).code == "NOT_FOUND"
