"""Every cleaning rule of the long-form vocabulary, on hand-written answers with hand-written expectations."""

from __future__ import annotations

import pytest

from n2m.labeling.vocab.clean import (
    REASONS,
    CleanRules,
    VocabCollector,
    near_key,
    normalise_sentence,
    reject_reason,
    split_sentences,
)
from n2m.labeling.vocab.tracks import Track
from n2m.schema import text_id

TRACK = Track(track_id="t1", title="Golden Harbor (Live) - 2011 Remaster", artist="Mira Stone & The Tides", tags=("rock",))
PROV = {"track_id": "t1", "backend": "test", "model": "m", "prompt_id": "describe"}


def test_split_sentences_handles_lines_bullets_and_abbreviations():
    text = ("1. A slow piano ballad, e.g. with soft strings. It builds gently!\n"
            "- Warm tape hiss sits under everything?  Yes it does.\n\n* Drums enter late")
    assert split_sentences(text) == [
        "A slow piano ballad, e.g. with soft strings.",
        "It builds gently!",
        "Warm tape hiss sits under everything?",
        "Yes it does.",
        "Drums enter late",
    ]
    # words that merely end like an abbreviation ("drums" / "ms.", "playlist" / "st.") still end a sentence
    assert split_sentences("It is built from piano and drums. The pulse is slow. Fit for a playlist. Mrs. Jones likes "
                           "it (e.g. at night).") == [
        "It is built from piano and drums.", "The pulse is slow.", "Fit for a playlist.",
        "Mrs. Jones likes it (e.g. at night)."]


def test_normalise_whitespace_casing_markup_and_final_stop():
    assert normalise_sentence("  a   **slow**  piano\tballad ") == "A slow piano ballad."
    assert normalise_sentence('"LOUD DISTORTED GUITARS DOMINATE THE MIX!"') == "Loud distorted guitars dominate the mix!"
    assert normalise_sentence("the bass is deep,") == "The bass is deep."


def test_near_key_strips_punctuation_case_and_spaces():
    assert near_key("A slow, warm   Piano-ballad!") == "a slow warm piano ballad"
    assert near_key("A slow warm piano ballad.") == near_key("a SLOW warm (piano) ballad")


@pytest.mark.parametrize(
    ("sentence", "reason"),
    [
        ("Golden Harbor opens with a quiet piano figure.", "names_title"),
        ("The song golden harbor is a mellow ballad.", "names_title"),
        ("Mira Stone sings over a bed of strings.", "names_artist"),
        ("The Tides back the vocals with tight harmonies.", "names_artist"),
        ("As an AI, I cannot listen to audio recordings.", "refusal"),
        ("I'm not familiar with this particular recording.", "refusal"),
        ("Sorry, there is little information available about it.", "refusal"),
        ("Here is a description of the music you asked for.", "meta"),
        ("I hope this helps you understand the sound.", "meta"),
        ("In summary, it is a pleasant listen overall.", "meta"),
        ("You can hear it at https://example.org/track now.", "url"),
        ("More details are on www.musicsite.com today.", "url"),
        ("The singer was born in Ohio in 1965.", "off_topic"),
        ("It peaked at number five on the Billboard charts.", "off_topic"),
        ("It has over ten million streaming plays on Spotify.", "off_topic"),
        ("--- *** --- 12345 ---", "not_text"),
        ("Slow piano.", "too_short"),
        ("A " + "very " * 70 + "long sentence.", "too_long"),
        ("A warm, slow piano ballad with soft strings and brushed drums.", ""),
        ("The harbour sounds of gulls open the piece before the piano enters.", ""),  # "harbour" is not the title
    ],
)
def test_reject_reason(sentence, reason):
    assert reject_reason(normalise_sentence(sentence), TRACK, CleanRules()) == reason


def test_every_rule_has_a_reason_text():
    assert {"names_title", "names_artist", "refusal", "meta", "url", "off_topic", "too_short", "too_long",
            "request_failed", "empty_response", "not_text"} <= set(REASONS)


def test_length_limits_follow_the_rules():
    rules = CleanRules(min_words=2, max_words=5, max_chars=30)
    assert reject_reason("Slow piano.", TRACK, rules) == ""
    assert reject_reason("A slow warm piano ballad tonight.", TRACK, rules) == "too_long"
    assert reject_reason("Supercalifragilistic orchestration.", TRACK, rules) == "too_long"  # 36 chars > 30


def test_collector_dedupes_exactly_and_near_exactly_and_keeps_first_provenance():
    collector = VocabCollector()
    collector.add_response("A warm, slow piano ballad. Soft strings swell underneath.", TRACK, PROV)
    other = {**PROV, "track_id": "t2"}
    collector.add_response("A warm, slow piano ballad.\nA warm slow piano-ballad! Mira Stone sings softly here.",
                           TRACK, other)
    collector.add_response("   ", TRACK, other)
    collector.add_failure("http_500", other)
    texts = [r["text"] for r in collector.rows]
    assert texts == ["A warm, slow piano ballad.", "Soft strings swell underneath."]
    assert [r["track_id"] for r in collector.rows] == ["t1", "t1"]
    assert all(r["id"] == text_id(r["text"]) and r["kind"] == "long" and r["aspect"] == "" for r in collector.rows)
    assert collector.duplicates == {"exact": 1, "near": 1}
    assert collector.rejected == {"names_artist": 1, "empty_response": 1, "request_failed": 1}
    assert collector.sentences == 5
    assert {(r["reason"], r["track_id"]) for r in collector.rejections} == {
        ("names_artist", "t2"), ("empty_response", "t2"), ("request_failed", "t2")}
    assert collector.examples["names_artist"] == ["Mira Stone sings softly here."]
