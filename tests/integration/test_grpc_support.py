"""The gRPC test infrastructure itself (grpc_support.py, grpc_upstream.py), called directly
with grpcio's client, no gateway in between: each call kind, every metadata control, the
health table, peers, TLS, restart on the same port. The gateway's gRPC tests rely on these
behaviours; a failure here is a broken tool, not a broken gateway."""

import threading
import time

import grpc
import pytest

import grpc_support as gs
from grpc_support import grpc_certs, grpc_upstream_factory  # noqa: F401 (fixtures)


@pytest.fixture
def up(grpc_upstream_factory):
    return grpc_upstream_factory()


@pytest.fixture
def echo(up):
    with gs.insecure_channel(up.port) as ch:
        yield gs.echo_stub(ch)


def msg(text="", payload=b""):
    return gs.pb().echo.Msg(text=text, payload=payload)


def test_unary_echoes_and_carries_peer_and_trailers(echo, up):
    reply, call = echo.Unary.with_call(msg("hello", b"\x00" * 100), timeout=5)
    assert (reply.text, reply.payload, reply.count, reply.bytes) == ("hello", b"\x00" * 100, 1, 100)
    initial, trailing = gs.metadata(call.initial_metadata()), gs.metadata(call.trailing_metadata())
    assert initial["x-peer"].startswith("ipv4:127.0.0.1:")
    assert trailing["x-trailer"] == "ok"
    assert trailing["x-trailer-bin"] == b"\x00\x01\xfe\xff"
    assert trailing["x-peer"] == initial["x-peer"]
    [c] = up.calls("/echo.Echo/Unary")
    assert c["peer"] == initial["x-peer"]


def test_server_stream_sends_n_messages_of_size_s(echo):
    call = echo.ServerStream(gs.pb().echo.StreamReq(count=20, size=3000), timeout=10)
    got = list(call)
    assert [m.text for m in got] == [str(i) for i in range(20)]
    assert all(m.payload == bytes([i]) * 3000 for i, m in enumerate(got))
    assert gs.metadata(call.trailing_metadata())["x-trailer"] == "ok"
    assert call.code() == grpc.StatusCode.OK


def test_client_stream_counts_messages_and_bytes(echo):
    reply, call = echo.ClientStream.with_call(iter([msg(payload=b"a" * n) for n in range(1, 11)]),
                                              timeout=10)
    assert (reply.count, reply.bytes) == (10, 55)
    trailing = gs.metadata(call.trailing_metadata())
    assert (trailing["x-count"], trailing["x-bytes"]) == ("10", "55")


def test_bidi_answers_each_message_as_it_arrives(echo):
    # Ping-pong: the next message is only sent once the answer to the previous one came,
    # so the server must answer before the request stream ends.
    answered = threading.Semaphore(0)

    def requests():
        for i in range(5):
            if i:
                assert answered.acquire(timeout=5), f"no answer to message {i - 1}"
            yield msg(str(i), b"x" * i)

    call = echo.Bidi(requests(), timeout=10)
    for i, reply in enumerate(call):
        assert (reply.text, reply.count, reply.bytes) == (str(i), i + 1, sum(range(i + 1)))
        answered.release()
    trailing = gs.metadata(call.trailing_metadata())
    assert (trailing["x-count"], trailing["x-bytes"]) == ("5", "10")


def test_abort_with_code_and_message_keeps_trailers(echo):
    with pytest.raises(grpc.RpcError) as e:
        echo.Unary(msg(), metadata=[("x-abort-code", "RESOURCE_EXHAUSTED"),
                                    ("x-abort-message", "slow down"),
                                    ("x-add-trailer", "x-why=testing")], timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert e.value.details() == "slow down"
    trailing = gs.metadata(e.value.trailing_metadata())
    assert trailing["x-why"] == "testing" and trailing["x-trailer"] == "ok"
    with pytest.raises(grpc.RpcError) as e:
        echo.Unary(msg(), metadata=[("x-abort-code", "14")], timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_abort_after_n_messages(echo):
    call = echo.ServerStream(gs.pb().echo.StreamReq(count=10, size=1),
                             metadata=[("x-abort-code", "INTERNAL"), ("x-abort-after", "3")],
                             timeout=5)
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for m in call:
            got.append(m.text)
    assert got == ["0", "1", "2"] and e.value.code() == grpc.StatusCode.INTERNAL

    with pytest.raises(grpc.RpcError) as e:
        echo.ClientStream(iter([msg(payload=b"ab")] * 5),
                          metadata=[("x-abort-code", "DATA_LOSS"), ("x-abort-after", "2")], timeout=5)
    assert e.value.code() == grpc.StatusCode.DATA_LOSS
    assert gs.metadata(e.value.trailing_metadata())["x-count"] == "2"


def test_bad_controls_are_invalid_argument(echo):
    for md in ([("x-abort-code", "0")], [("x-abort-code", "NOPE")], [("x-delay-ms", "soon")],
               [("x-add-trailer", "novalue")]):
        with pytest.raises(grpc.RpcError) as e:
            echo.Unary(msg(), metadata=md, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, md


def test_delay_and_deadline(echo):
    t = time.monotonic()
    echo.Unary(msg(), metadata=[("x-delay-ms", "300")], timeout=5)
    assert time.monotonic() - t >= 0.3
    with pytest.raises(grpc.RpcError) as e:
        echo.Unary(msg(), metadata=[("x-delay-ms", "5000")], timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_echo_metadata(echo):
    _, call = echo.Unary.with_call(
        msg(), metadata=[("x-echo-metadata", "1"), ("x-custom", "value"), ("x-data-bin", b"\xff\x00")],
        timeout=5)
    initial = gs.metadata(call.initial_metadata())
    assert initial["x-custom"] == "value" and initial["x-data-bin"] == b"\xff\x00"
    assert "user-agent" not in initial and "x-peer" in initial
    # Without the control, nothing but x-peer comes back.
    _, call = echo.Unary.with_call(msg(), metadata=[("x-custom", "value")], timeout=5)
    assert set(gs.metadata(call.initial_metadata())) == {"x-peer"}


def test_calls_are_logged_with_their_metadata(echo, up):
    echo.Unary(msg(), metadata=[("x-tag", "one"), ("x-b-bin", b"\x01\x02")], timeout=5)
    [c] = up.wait_calls(1, "/echo.Echo/Unary")
    md = dict(c["metadata"])
    assert md["x-tag"] == "one" and md["x-b-bin"] == "0102"


def test_peers_count_connections(up):
    for _ in range(3):
        with gs.insecure_channel(up.port) as ch:
            for _ in range(4):
                gs.echo_stub(ch).Unary(msg(), timeout=5)
    assert len(up.calls()) == 12
    assert len(up.peers()) == 3


def test_health_table(up):
    assert gs.check_health(up.port) == gs.SERVING
    assert gs.check_health(up.port, "nope") == "NOT_FOUND"
    up.set_health_table({"": gs.NOT_SERVING, "billing": gs.SERVING, "gone": gs.SERVICE_UNKNOWN,
                         "odd": gs.UNKNOWN, "broken": "error:UNAVAILABLE", "stuck": "hang"})
    assert gs.check_health(up.port) == gs.NOT_SERVING
    assert gs.check_health(up.port, "billing") == gs.SERVING
    assert gs.check_health(up.port, "gone") == gs.SERVICE_UNKNOWN
    assert gs.check_health(up.port, "odd") == gs.UNKNOWN
    assert gs.check_health(up.port, "broken") == "UNAVAILABLE"
    assert gs.check_health(up.port, "stuck", timeout=0.5) == "DEADLINE_EXCEEDED"
    up.set_health("billing", gs.NOT_SERVING)
    assert gs.check_health(up.port, "billing") == gs.NOT_SERVING
    services = [c["service"] for c in up.calls("/grpc.health.v1.Health/Check")]
    assert services == ["", "nope", "", "billing", "gone", "odd", "broken", "stuck", "billing"]


def test_health_given_at_start(grpc_upstream_factory):
    up = grpc_upstream_factory(health={"": gs.NOT_SERVING})
    assert gs.check_health(up.port) == gs.NOT_SERVING


def test_tls(grpc_upstream_factory, grpc_certs):
    up = grpc_upstream_factory(tls=(grpc_certs / "upstream.crt", grpc_certs / "upstream.key"))
    with gs.secure_channel(up.port, grpc_certs / "ca.crt") as ch:
        assert gs.echo_stub(ch).Unary(msg("tls"), timeout=5).text == "tls"
    assert gs.check_health(up.port, ca=grpc_certs / "ca.crt") == gs.SERVING
    # Plaintext to a TLS port fails: the helpers really speak TLS.
    with gs.insecure_channel(up.port) as ch:
        with pytest.raises(grpc.RpcError) as e:
            gs.echo_stub(ch).Unary(msg(), timeout=2)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_restart_on_the_same_port_and_kill(grpc_upstream_factory):
    up = grpc_upstream_factory()
    port = up.port
    up.restart()
    assert up.port == port and gs.check_health(port) == gs.SERVING
    up.kill()
    assert not up.running
    assert gs.check_health(port, timeout=1) in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def test_max_concurrent_streams(grpc_upstream_factory):
    up = grpc_upstream_factory(max_concurrent_streams=2)
    with gs.insecure_channel(up.port) as ch:
        stub = gs.echo_stub(ch)
        futures = [stub.Unary.future(msg(str(i)), metadata=[("x-delay-ms", "300")], timeout=10)
                   for i in range(4)]
        t = time.monotonic()
        assert sorted(f.result().text for f in futures) == ["0", "1", "2", "3"]
        # Two waves of two: the limit is in force.
        assert time.monotonic() - t >= 0.55
