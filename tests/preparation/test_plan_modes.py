"""The plan per format, as a table: for a duration, budget and source, which rate control, which
target bitrate, how many channels and which Opus application. Pure (no ffmpeg).

The targets are pinned: a change to the size model (formats.py) or the planner moves them, and this
table says which plans moved. Each row's comment says what it stands for.
"""

from __future__ import annotations

import pytest
from test_plan import make_info

from audiopipe.preparation.formats import FORMATS
from audiopipe.preparation.plan import (
    DoesNotFit,
    bitrate_for,
    corrected,
    expected_size,
    likely_speech,
    measured_ratio,
    plan,
)

H = 3600

# (format, seconds, budget, source channels, voice note) -> (rate control, bitrate, channels, application)
TABLE = [
    # a minute of mono speech in 80 KB: SILK-range VBR, sized as speech (it undershoots its target)
    (("ogg", 60, 80_000, 1, False), ("cvbr", 10300, 1, "voip")),
    # the same budget from a stereo source: mixed down to mono, sized as music (no undershoot assumed)
    (("ogg", 60, 80_000, 2, False), ("cvbr", 9700, 1, "voip")),
    # a 5-minute voice note in 512 KB: mono, in the 12-16k band (where SILK gives way to hybrid)
    (("ogg", 300, 512_000, 1, True), ("cvbr", 12300, 1, "voip")),
    # a 3-minute mono memo in 180 KB: above the SILK/hybrid switch, still tuned for speech (voip)
    (("ogg", 180, 540_000, 1, False), ("cvbr", 22500, 1, "voip")),
    # ten minutes of stereo in 16 MB: the ceiling, not the budget, decides
    (("ogg", 600, 16_000_000, 2, False), ("cvbr", 128000, 2, "audio")),
    # five hours of mono in 16 MB: near the floor (6k), sized as speech
    (("ogg", 5 * H, 16_000_000, 1, False), ("cvbr", 6800, 1, "voip")),
    # MP3 stays CBR, on LAME's steps (as good as its VBR at equal size, and exactly sized)
    (("mp3", 60, 200_000, 1, False), ("cbr", 24000, 1, "audio")),
    (("mp3", 600, 16_000_000, 2, False), ("cbr", 192000, 2, "audio")),
    # four hours of stereo MP3: mono at the floor
    (("mp3", 4 * H, 16_000_000, 2, False), ("cbr", 8000, 1, "audio")),
    # AAC: the native encoder's own average bitrate (-b:a)
    (("m4a", 60, 200_000, 2, False), ("abr", 22000, 1, "audio")),
    (("aac", 60, 200_000, 1, False), ("abr", 22000, 1, "audio")),
    (("amr", 60, 100_000, 1, False), ("cbr", 12200, 1, "audio")),
]


@pytest.mark.parametrize(("case", "want"), TABLE, ids=[f"{c[0]}-{c[1]}s-{c[2]}B-{c[3]}ch{'-vn' if c[4] else ''}"
                                                       for c, _ in TABLE])
def test_the_plan_for_each_format(case: tuple[str, float, int, int, bool], want: tuple[str, int, int, str]) -> None:
    name, seconds, budget, channels, voice_note = case
    p = plan(make_info(channels=channels, duration=seconds), FORMATS[name], budget, voice_note=voice_note)
    assert (p.rate_control, p.bitrate, p.channels, p.application) == want
    assert p.expected_size <= budget


@pytest.mark.parametrize(("name", "seconds", "budget"), [
    ("ogg", 12 * H, 16_000_000),   # twelve hours: not even 6 kbit/s fits
    ("ogg", 30, 20_000),           # a tiny budget: under the floor for 30 s
    ("mp3", 60, 50_000),           # under 8 kbit/s with LAME's Xing frame
    ("m4a", 60, 100_000),          # under 16 kbit/s after the MP4 tables
])
def test_a_budget_under_the_floor_does_not_fit(name: str, seconds: float, budget: int) -> None:
    fmt = FORMATS[name]
    with pytest.raises(DoesNotFit) as caught:
        plan(make_info(channels=1, duration=seconds), fmt, budget)
    # what it says would fit, does (at the floor)
    shorter = plan(make_info(channels=1, duration=caught.value.fits_seconds * 0.99), fmt, budget)
    assert shorter.bitrate == fmt.floor or shorter.bitrate < 2 * fmt.floor


def test_speech_is_sized_for_vbr_undershoot_only_where_it_happens() -> None:
    """Under 12 kbit/s a mono (speech) source gets a higher target than a stereo one in the same
    budget: constrained VBR spends less than its target on speech there, and more on music-like
    content; from 16 kbit/s both get the same."""
    ogg = FORMATS["ogg"]
    for budget, higher in ((60_000, True), (80_000, True), (120_000, False), (400_000, False)):
        mono = plan(make_info(channels=1, duration=60), ogg, budget)
        stereo = plan(make_info(channels=2, duration=60), ogg, budget)
        assert mono.speech and not stereo.speech
        assert (mono.bitrate > stereo.bitrate) is higher, (budget, mono.bitrate, stereo.bitrate)


def test_voice_note_and_mono_sources_are_sized_as_speech() -> None:
    assert likely_speech(make_info(channels=1))
    assert likely_speech(make_info(channels=2), voice_note=True)
    assert not likely_speech(make_info(channels=2))


@pytest.mark.parametrize("speech", [True, False])
def test_bitrate_for_is_the_highest_bitrate_the_budget_holds_in_every_band(speech: bool) -> None:
    """bitrate_for inverts the banded size model: its answer fits, 100 bit/s more does not (or is
    in a band whose factor the budget cannot pay)."""
    ogg = FORMATS["ogg"]
    for budget in range(20_000, 600_000, 7_919):
        b = bitrate_for(ogg, budget, 60.0, 48000, speech=speech)
        assert expected_size(ogg, b, 48000, 60.0, speech=speech) <= budget + 1
        assert expected_size(ogg, b + 100, 48000, 60.0, speech=speech) > budget


# --- the fill's arithmetic: a size model corrected by what one output measured ----------------------

@pytest.mark.parametrize("name", ["ogg", "mp3", "m4a", "aac"])
def test_an_output_that_came_out_as_expected_measures_a_ratio_of_one(name: str) -> None:
    p = plan(make_info(channels=1, duration=120), FORMATS[name], 300_000)
    assert measured_ratio(p, FORMATS[name], p.expected_size) == pytest.approx(1.0, abs=0.002)


def test_a_model_corrected_by_half_plans_about_twice_the_bitrate() -> None:
    """Speech that came out at half its expected payload (long pauses): planned again with the
    model scaled by the half, the bitrate doubles (to the step), and the new plan expects the budget."""
    fmt, info, budget = FORMATS["ogg"], make_info(channels=1, duration=120), 300_000
    first = plan(info, fmt, budget)
    container = expected_size(fmt, 0, first.sample_rate, first.duration)
    half = container + (first.expected_size - container) // 2
    ratio = measured_ratio(first, fmt, half)
    assert ratio == pytest.approx(0.5, abs=0.002)
    again = plan(info, corrected(fmt, ratio), budget, channels=first.channels)
    assert 1.8 * first.bitrate <= again.bitrate <= 2.2 * first.bitrate
    assert 0.95 * budget <= again.expected_size <= budget
    assert corrected(fmt, 1.0) == fmt


def test_a_plan_knows_whether_the_budget_or_the_ceiling_decided_it() -> None:
    tight = plan(make_info(channels=1, duration=600), FORMATS["ogg"], 500_000)
    roomy = plan(make_info(channels=1, duration=60), FORMATS["ogg"], 16_000_000)
    assert tight.bitrate < tight.ceiling
    assert roomy.bitrate == roomy.ceiling == 64000
