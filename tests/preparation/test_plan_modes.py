"""The plan per format, as a table: for a duration, budget and source, which rate control, which
target bitrate, how many channels and which Opus application. Pure (no ffmpeg).

The targets are pinned: a change to the size model (formats.py) or the planner moves them, and this
table says which plans moved. Each row's comment says what it stands for.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_plan import make_info

from audiopipe.preparation.formats import FORMATS
from audiopipe.preparation.plan import (
    FILL_BELOW,
    HEADROOM,
    STEP_USE,
    DoesNotFit,
    EncodePlan,
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
    # MP3: CBR on LAME's step where the step uses at least STEP_USE (92 %) of the budget; under 28k, else
    # LAME's ABR at the budget, sized for the voices it overshoots most (up to 1.3x its target).
    # A minute of mono speech in 200 KB: CBR 24k would use 90 %, so ABR 21k (about 26k real) at 16 kHz
    (("mp3", 60, 200_000, 1, False), ("abr", 21000, 1, "audio")),
    # the same from a stereo source: mono under 64k, and sized as speech too (a voice in stereo is)
    (("mp3", 60, 200_000, 2, False), ("abr", 21000, 1, "audio")),
    # 125 KB: the 16k step uses 97 %: CBR, exact, and at the same size as good as ABR or better
    (("mp3", 60, 125_000, 1, False), ("cbr", 16000, 1, "audio")),
    # 150 KB: CBR 16k would use 80 %: ABR 15k (about 19k real) at 12 kHz
    (("mp3", 60, 150_000, 1, False), ("abr", 15000, 1, "audio")),
    # 80 KB: CBR 8k would use 75 %: ABR 8k at 8 kHz (about 10k real)
    (("mp3", 60, 80_000, 1, False), ("abr", 8000, 1, "audio")),
    # 70 KB: ABR 8k would not fit: CBR on the floor step, the only thing that does
    (("mp3", 60, 70_000, 1, False), ("cbr", 8000, 1, "audio")),
    # 280 KB (37k): from 28k ABR strays too far by the voice for a first encode: CBR on the 32k step,
    # though it uses 86 % (the fill then takes ABR above it: test_an_mp3_fill_takes_abr_above_the_step)
    (("mp3", 60, 280_000, 1, False), ("cbr", 32000, 1, "audio")),
    # ten minutes of stereo in 16 MB: CBR 192k (90 %)
    (("mp3", 600, 16_000_000, 2, False), ("cbr", 192000, 2, "audio")),
    # five minutes in 16 MB: the ceiling (320k), not the budget, decides
    (("mp3", 300, 16_000_000, 2, False), ("cbr", 320000, 2, "audio")),
    # two and a half hours of stereo: mono, ABR 10k (CBR 8k would use 72 %); four hours: CBR at the floor
    (("mp3", 2.5 * H, 16_000_000, 2, False), ("abr", 10000, 1, "audio")),
    (("mp3", 4 * H, 16_000_000, 2, False), ("cbr", 8000, 1, "audio")),
    # AAC: the native encoder's own average bitrate (-b:a), any 100 bit/s, sized by measured bands.
    # A minute in 150 KB: 18.5k, under 21k: at 16 kHz (1.025x its target)
    (("m4a", 60, 150_000, 1, False), ("abr", 18500, 1, "audio")),
    # 200 KB: from 21k the source's rate (44.1 kHz here), where the encoder comes out under its target
    # at 23-28k (sized at 1.026x, not lower: see formats.py); ADTS's 7-byte headers take a bit more
    (("m4a", 60, 200_000, 2, False), ("abr", 24000, 1, "audio")),
    (("aac", 60, 200_000, 1, False), ("abr", 23100, 1, "audio")),
    # 225 KB: 27.6k in the 25-28k band (1.012x)
    (("m4a", 60, 225_000, 1, False), ("abr", 27600, 1, "audio")),
    # half an hour of mono in 16 MB: 56-72k mono (1.035x)
    (("m4a", 1800, 16_000_000, 1, False), ("abr", 66300, 1, "audio")),
    # twenty minutes of stereo: 80-128k stereo at the source's 44.1 kHz (up to 1.06x its target)
    (("m4a", 1200, 16_000_000, 2, False), ("abr", 97700, 2, "audio")),
    (("amr", 60, 100_000, 1, False), ("cbr", 12200, 1, "audio")),
]


@pytest.mark.parametrize(("case", "want"), TABLE, ids=[f"{c[0]}-{c[1]}s-{c[2]}B-{c[3]}ch{'-vn' if c[4] else ''}"
                                                       for c, _ in TABLE])
def test_the_plan_for_each_format(case: tuple[str, float, int, int, bool], want: tuple[str, int, int, str]) -> None:
    name, seconds, budget, channels, voice_note = case
    p = plan(make_info(channels=channels, duration=seconds), FORMATS[name], budget, voice_note=voice_note)
    assert (p.rate_control, p.bitrate, p.channels, p.application) == want
    assert p.expected_size <= budget * HEADROOM


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


def test_mp3_takes_abr_only_where_the_step_under_the_budget_would_waste_it() -> None:
    """Over a sweep of budgets for a minute of speech: CBR wherever LAME's step under the budget uses
    at least STEP_USE of it (or ABR cannot do better: under its floor, or at a first encode's ceiling, 27k), ABR at
    the budget everywhere else, and then always a fuller file than the step's (ABR too may fall short
    of STEP_USE by LAME's whole kbit/s)."""
    mp3 = FORMATS["mp3"]
    assert mp3.between_steps is not None
    steps_only = replace(mp3, between_steps=None)
    info = make_info(channels=1, duration=60)
    seen = set()
    for budget in range(62_000, 1_300_000, 4_999):
        p = plan(info, mp3, budget)
        on_step = plan(info, steps_only, budget)
        try:
            abr: EncodePlan | None = plan(info, mp3.between_steps, budget)
        except DoesNotFit:
            abr = None
        seen.add(p.rate_control)
        if p.rate_control == "cbr":
            assert p == on_step
            assert (on_step.expected_size >= STEP_USE * budget or abr is None
                    or abr.expected_size <= on_step.expected_size or on_step.bitrate == mp3.ceiling(1)
                    or abr.bitrate == mp3.between_steps.blind_ceiling_per_channel), budget
        else:
            assert abr is not None
            assert p == replace(abr, ceiling=mp3.ceiling(1))  # an unlimited budget would get 160k (CBR)
            assert p.bitrate < 28000 and p.sample_rate <= 16000  # where ABR's size is predictable enough
            assert on_step.expected_size < STEP_USE * budget, budget
            assert on_step.expected_size < p.expected_size <= budget * HEADROOM, budget
    assert seen == {"cbr", "abr"}


def test_aac_bitrates_are_any_100_bits_per_second() -> None:
    """Native AAC takes any bitrate (LAME's ABR only whole kbit/s): finer steps waste less of a budget."""
    m4a = FORMATS["m4a"]
    bitrates = {plan(make_info(channels=1, duration=60), m4a, b).bitrate for b in range(150_000, 160_000, 700)}
    assert len(bitrates) > 5 and all(b % 100 == 0 for b in bitrates) and any(b % 1000 for b in bitrates)


@pytest.mark.parametrize("name", ["m4a", "aac"])
@pytest.mark.parametrize("source_rate", [48000, 44100, 32000, 96000])
def test_aac_codes_at_16_khz_under_21k_a_channel_and_at_the_source_rate_above(name: str, source_rate: int) -> None:
    """AAC's rate ladder (formats.AAC_RATE_LADDER, measured at equal size): 16 kHz where the native
    encoder at 48 kHz scores worse, under 21k per channel; from there the source's rate (up to 48 kHz,
    never upsampled), as the plain command keeps it: no 22.05 or 32 kHz step, which scored under both."""
    fmt, top, seen = FORMATS[name], min(source_rate, 48000), set()
    for channels in (1, 2):
        for budget in range(140_000, 2_000_000, 10_000):  # a minute at 18.7k to 267k
            p = plan(make_info(rate=source_rate, channels=channels, duration=60), fmt, budget)
            assert p.sample_rate == (16000 if p.bitrate / p.channels < 21000 else top), (budget, p)
            seen.add((p.sample_rate, p.channels))
    assert seen == {(16000, 1), (top, 1), (top, 2)}


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


def test_an_mp3_fill_corrects_the_abr_model_only() -> None:
    """An ABR output that came out at 85 % of what was expected: the ratio is measured against ABR's
    own model, and the corrected model plans a higher ABR bitrate; the CBR steps keep their exact
    model (ABR's overshoot on this input says nothing of CBR's)."""
    mp3, info, budget = FORMATS["mp3"], make_info(channels=1, duration=60), 200_000
    first = plan(info, mp3, budget)
    assert first.rate_control == "abr"
    abr = mp3.in_control("abr")
    container = expected_size(abr, 0, first.sample_rate, first.duration)
    short = container + int((first.expected_size - container) * 0.85)
    ratio = measured_ratio(first, mp3, short)
    assert ratio == pytest.approx(0.85, abs=0.002)
    fixed = corrected(mp3, ratio, first.rate_control)
    assert (fixed.rate_control, fixed.bitrate_factor, fixed.factor_bands) == ("cbr", 1.0, ())
    assert fixed.in_control("abr").factor_bands == tuple((b, f * ratio) for b, f in abr.factor_bands)
    again = plan(info, fixed, budget, channels=first.channels)
    assert again.rate_control == "abr" and again.bitrate > first.bitrate
    assert again.expected_size <= budget * HEADROOM


def _fill_after_the_step(kbps: int, seconds: int = 60) -> tuple[EncodePlan, EncodePlan, int]:
    """Mono speech: the first plan, and the fill's once that came out as expected."""
    mp3, info = FORMATS["mp3"], make_info(channels=1, duration=seconds)
    budget = seconds * kbps * 1000 // 8
    first = plan(info, mp3, budget)
    ratio = measured_ratio(first, mp3, first.expected_size)
    return first, plan(info, corrected(mp3, ratio, first.rate_control), budget, channels=1, fill=True), budget


@pytest.mark.parametrize("kbps", [75, 110, 140])
def test_an_mp3_fill_takes_abr_above_the_step(kbps: int) -> None:
    """Above 28k a first encode is CBR on the step under the budget (it always fits); the fill, once
    that output measured under FILL_BELOW, plans LAME's ABR, sized for the voices it overshoots most
    (so it fits too), fuller than the step, at 48 kHz or more (where ABR scored better than the step)."""
    first, fill, budget = _fill_after_the_step(kbps)
    assert first.rate_control == "cbr" and first.expected_size < FILL_BELOW * budget
    assert fill.rate_control == "abr" and fill.bitrate >= 43000
    assert first.expected_size < fill.expected_size <= budget * HEADROOM
    assert fill.sample_rate >= max(first.sample_rate, 44100)


@pytest.mark.parametrize(("kbps", "seconds"), [(36, 60), (44, 60), (54, 60), (36, 15)])
def test_an_mp3_fill_leaves_the_step_where_abr_codes_under_48_khz(kbps: int, seconds: int) -> None:
    """Between 28k and 43k ABR codes at 22.05 or 32 kHz, where it scored under CBR on the step below
    even when fuller: the step stays (the fill plans nothing fuller), nor does it drop to ABR under 28k
    at a lower sample rate (15 s in 36k: ABR 27k at 16 kHz would be fuller than CBR 32k at 22.05 kHz)."""
    first, fill, budget = _fill_after_the_step(kbps, seconds)
    assert first.rate_control == "cbr" and first.expected_size < FILL_BELOW * budget
    assert (fill.rate_control, fill.bitrate) == ("cbr", first.bitrate)


def test_an_mp3_fill_after_an_abr_pass_plans_by_what_it_measured() -> None:
    """A woman's voice: ABR above 28k came out at 80 % of what the model (sized for men's voices)
    expected. Corrected by that, the next ABR pass aims at the budget with a higher target."""
    mp3, info, budget = FORMATS["mp3"], make_info(channels=1, duration=60), 60 * 75_000 // 8
    first = plan(info, mp3, budget)
    abr = plan(info, corrected(mp3, measured_ratio(first, mp3, first.expected_size), "cbr"), budget,
               channels=1, fill=True)
    container = expected_size(mp3.in_control("abr"), 0, abr.sample_rate, abr.duration)
    short = container + int((abr.expected_size - container) * 0.8)
    ratio = measured_ratio(abr, mp3, short)
    again = plan(info, corrected(mp3, ratio, abr.rate_control), budget, channels=1, fill=True)
    assert again.rate_control == "abr" and again.bitrate > abr.bitrate * 1.2
    assert FILL_BELOW * budget <= again.expected_size <= budget * HEADROOM
