"""Raw JSON body handling: narrow decoding and byte-preserving member edits."""

from __future__ import annotations

import msgspec
import pytest

from proxy.body import BodyError, DuplicateMember, decode_fields, find_member, set_member


def test_model_rewrite_changes_only_the_model_value() -> None:
    """Whitespace, key order and number spelling outside `model` survive byte for byte."""
    body = b'{ "temperature" : 1.0E0,\n  "model" :  "fast" , "messages": [{"role":"user"}]}'
    out = set_member(body, "model", "gpt-4o-mini")
    assert out == body.replace(b'"fast"', b'"gpt-4o-mini"')


def test_nested_model_key_is_not_mistaken_for_the_top_level_one() -> None:
    """A tool schema property named "model" before the real member stays untouched."""
    body = (
        b'{"tools":[{"function":{"parameters":{"properties":{"model":{"type":"string"}}}}}],'
        b'"model":"fast"}'
    )
    out = set_member(body, "model", "m2")
    assert out.startswith(body[: body.index(b'"model":"fast"')])
    assert msgspec.json.decode(out)["model"] == "m2"
    props = msgspec.json.decode(out)["tools"][0]["function"]["parameters"]["properties"]
    assert props == {"model": {"type": "string"}}


def test_strings_with_escaped_quotes_and_braces_are_skipped_correctly() -> None:
    """Braces and escaped quotes inside strings do not confuse the top-level scan."""
    body = b'{"messages":[{"content":"he said \\"}{\\" and \\\\"}],"model":"a"}'
    assert msgspec.json.decode(set_member(body, "model", "b"))["model"] == "b"


def test_missing_member_is_inserted_after_the_opening_brace() -> None:
    """Insertion keeps the rest of the body as it was."""
    assert set_member(b'{"a":1}', "model", "m") == b'{"model":"m","a":1}'
    assert set_member(b"{ }", "model", "m") == b'{"model":"m" }'


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"o1-pro","messages":[],"model":"fast"}',
        b'{"model":"fast","model":"fast"}',
        # A name written with escapes is the same name to every JSON parser.
        b'{"mod\\u0065l":"o1-pro","messages":[],"model":"fast"}',
        b'{"model":"o1-pro","\\u006dodel":"fast"}',
        b'{"\\u006dodel":"fast"}',
    ],
)
def test_a_member_given_twice_is_refused_rather_than_half_rewritten(body: bytes) -> None:
    """Routing reads a repeated member's last value; a rewrite that a last-wins parser
    (the provider's) would not see is refused instead of sent."""
    assert decode_fields(body).model == "fast"
    with pytest.raises(DuplicateMember, match='more than one top-level "model" member'):
        set_member(body, "model", "gpt-4o-mini")


def test_a_repeated_name_nested_below_the_top_level_is_not_a_duplicate() -> None:
    """Only top-level members count: the same name inside a value is content."""
    body = b'{"model":"fast","metadata":{"model":"x","model":"y"}}'
    assert set_member(body, "model", "m") == body.replace(b'"fast"', b'"m"')


def test_find_member_returns_none_when_absent() -> None:
    """Absent keys are reported as None, not as an error."""
    assert find_member(b'{"a":{"model":1}}', "model") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "must be a JSON object"),
        (b'{"model": 5}', "`model`"),
        (b'{"model": "x", "stream": "yes"}', "`stream`"),
        (b"{not json", "not valid JSON"),
    ],
)
def test_bad_bodies_raise_a_message_naming_the_problem(body: bytes, message: str) -> None:
    """Decoding errors say what is wrong in client-facing words."""
    with pytest.raises(BodyError, match=message):
        decode_fields(body)


def test_decode_fields_reads_only_routing_fields() -> None:
    """model, stream and stream_options.include_usage are read; the rest is ignored."""
    fields = decode_fields(
        b'{"model":"m","stream":true,"stream_options":{"include_usage":false},"x":[1]}'
    )
    assert (fields.model, fields.stream) == ("m", True)
    assert fields.stream_options is not None
    assert fields.stream_options.include_usage is False
