"""The formats audiopipe can produce, and what the API accepts as it is: a data table.

Everything the planner needs to know about a format is a field here (bitrate bounds, the sample rates
its encoder takes at each bitrate, container overhead, when stereo is worth it), so :mod:`plan` never
asks which format it is holding. Whether this machine's ffmpeg can encode a format is a question for
:mod:`encoders`, not for the table.

Numbers here are the planner's model of each encoder; they were measured with ffmpeg 5.1 (Debian 12)
and are checked after every encode anyway (verify + re-plan), so a small error costs a pass, not a
rejected message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from audiopipe.errors import UsageError, setting

# How an encoder spends its bits. "cbr": the same every frame (LAME's CBR keeps a bit reservoir, so it
# still moves bits to where the sound needs them). "cvbr": Opus's constrained VBR, bits follow the
# content (pauses cost almost nothing) within a reservoir that keeps the average at the target, so
# the size stays predictable. "abr": the encoder's own average-bitrate control (native AAC's -b:a,
# LAME's ABR: -abr 1 -b:a N, any whole kbit/s, its frames on the MPEG version's standard bitrates).
RateControl = Literal["cbr", "cvbr", "abr"]

LOSSLESS_CODECS = frozenset({
    "flac", "alac", "wavpack", "tta", "ape", "mlp", "truehd", "shorten", "als",
})


def is_lossless(codec: str) -> bool:
    return codec.startswith("pcm_") or codec in LOSSLESS_CODECS


@dataclass(frozen=True)
class RateBand:
    """Sample rates that take only some bitrates (one MPEG version's), and the rate to move to when a
    bitrate is over or under them (None: no other rate helps, keep it)."""

    rates: tuple[int, ...]
    lowest: int                   # bitrates ``rates`` take, bit/s
    highest: int
    over: int | None = None       # the rate for a bitrate over ``highest``
    under: int | None = None      # the rate for a bitrate under ``lowest``
    within_source: bool = False   # move only to a rate the source has

    def move(self, rate: int, bitrate: float, source_rate: int) -> int:
        """The rate to encode ``bitrate`` at instead of ``rate`` (``rate`` when it takes it)."""
        if rate not in self.rates:
            return rate
        target = self.over if bitrate > self.highest else self.under if bitrate < self.lowest else None
        if target is None or (self.within_source and source_rate < target):
            return rate
        return target


# (per-channel bitrate under which, the sample rate to aim for); above the last step, TOP_RATE.
RATE_LADDER: tuple[tuple[int, int], ...] = ((12000, 8000), (28000, 16000), (40000, 22050), (56000, 32000))
TOP_RATE = 48000
STANDARD_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass(frozen=True)
class TargetFormat:
    name: str                 # what the user types: ogg, mp3, m4a, aac, amr
    extension: str            # output file extension (also what the server's sniff must map to)
    muxer: str                # ffmpeg -f
    encoder: str              # ffmpeg -c:a
    codec: str                # codec_name ffprobe reports for the result
    container: str            # format_name ffprobe reports for a file of this kind
    content_type: str         # what we send as the part's Content-Type
    floor: int                # lowest sensible bitrate, bit/s
    ceiling_per_channel: int  # highest sensible bitrate per channel, bit/s
    steps: tuple[int, ...] = ()   # discrete bitrates the encoder takes (empty: any whole kbit/s)
    fixed_overhead: int = 0       # container bytes that do not grow with duration
    overhead_per_second: float = 0.0  # container bytes per second of audio, whatever the rate
    bytes_per_frame: float = 0.0  # container bytes per codec frame (ADTS headers, MP4 sample tables)
    frame_samples: int = 1024     # samples per codec frame
    bitrate_factor: float = 1.0   # how far the encoder overshoots its nominal bitrate
    max_channels: int = 2
    stereo_min: int = 64000       # below this total bitrate a stereo output is made mono
    fixed_sample_rate: int | None = None  # the only rate the codec codes at (then the ladder is not used)
    rate_ladder: tuple[tuple[int, int], ...] = RATE_LADDER  # the sample rate that suits a bitrate
    rate_bands: tuple[RateBand, ...] = ()  # rates that take only some bitrates (MP3's MPEG versions)
    speech_below: int | None = None  # Opus: at or under this bitrate per channel, tune for speech (voip)
    rate_control: RateControl = "cbr"  # how the encoder spends bits (see RateControl)
    # (bitrate under which, the encoder's payload bytes per nominal byte there): where a VBR encoder's
    # real rate departs from its target, band by band; above the last band, ``bitrate_factor``.
    factor_bands: tuple[tuple[int, float], ...] = ()
    # The same for speech (a mono source or a voice note): pauses cost a VBR encoder almost nothing,
    # so speech comes out further under its target than music does. None: as ``factor_bands``.
    speech_factor_bands: tuple[tuple[int, float], ...] | None = None
    bitrate_quantum: int = 1000   # bitrates are multiples of this (when there are no ``steps``)
    # The encoder's priming and padding (and MP3's Xing frame) cost about this much more audio at the
    # bitrate: a few frames, whose bytes grow with the bitrate where ``fixed_overhead``'s do not.
    padding_seconds: float = 0.0
    # The same format in a rate control that takes any bitrate, for a budget that falls between two
    # of ``steps`` (MP3: LAME's ABR between its CBR steps): the planner takes it when the step under
    # the budget would leave much of it unused (see plan.STEP_USE). None: the steps (or ``rate_control``) only.
    between_steps: TargetFormat | None = None
    # The highest bitrate per channel a first encode takes in this rate control, where its size strays
    # too far by the input to aim at blind (MP3's ABR above 28k: 1.0-1.3x by the voice). Above it only
    # the fill does (transcode's, planned once an output that fits is made, so a stray costs an encode,
    # never a miss), up to ``ceiling_per_channel``. None: no such limit.
    blind_ceiling_per_channel: int | None = None
    # Above ``blind_ceiling_per_channel``, the fill takes this rate control only from this bitrate per
    # channel (where it scored better than the step under it); None: anywhere up to the ceiling.
    fill_from_per_channel: int | None = None

    def in_control(self, control: RateControl) -> TargetFormat:
        """The format as sized in ``control``: its ``between_steps`` variant when that is the one."""
        if self.between_steps is not None and control == self.between_steps.rate_control:
            return self.between_steps
        return self

    def bands(self, speech: bool = False) -> tuple[tuple[int, float], ...]:
        """The factor bands that apply to speech (``speech``) or to any other content."""
        if speech and self.speech_factor_bands is not None:
            return self.speech_factor_bands
        return self.factor_bands

    def factor_at(self, bitrate: float, speech: bool = False) -> float:
        """How far the encoder's payload comes out over (or under) ``bitrate``, as measured."""
        return next((f for below, f in self.bands(speech) if bitrate < below), self.bitrate_factor)

    def bytes_per_second(self, bitrate: float, sample_rate: int, speech: bool = False) -> float:
        """Expected output bytes per second of audio at ``bitrate`` (the planner's size model)."""
        frames = sample_rate / self.frame_samples if self.bytes_per_frame else 0.0
        return (bitrate / 8 * self.factor_at(bitrate, speech) + self.overhead_per_second
                + frames * self.bytes_per_frame)

    def ceiling(self, channels: int) -> int:
        return self.ceiling_per_channel * max(1, min(channels, self.max_channels))

    def highest_bitrate_at(self, source_rate: int) -> int | None:
        """The highest bitrate any sample rate up to ``source_rate`` takes (None: no such rule), so
        that no bitrate is planned that would need the source upsampled."""
        tops = [band.highest for band in self.rate_bands if min(band.rates) <= source_rate]
        return max(tops) if tops else None


# No 144k: MPEG-1's table (the 32-48 kHz rates the planner gives bitrates that high) has none, and
# LAME codes a 144k CBR there as 128k (measured at 44.1 kHz stereo: 0.889 of the target).
MP3_STEPS = (8000, 16000, 24000, 32000, 40000, 48000, 56000, 64000, 80000, 96000, 112000,
             128000, 160000, 192000, 224000, 256000, 320000)
AMR_STEPS = (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200)

MPEG1_RATES = (32000, 44100, 48000)      # MP3 bitrates 32..320 kbit/s
MPEG2_RATES = (16000, 22050, 24000)      # 8..160 kbit/s
MPEG25_RATES = (8000, 11025, 12000)      # 8..64 kbit/s
# Each MPEG version takes only some bitrates: move the rate until the bitrate is legal (in this order).
MP3_RATE_BANDS = (
    RateBand(MPEG25_RATES, 8000, 64000, over=22050, within_source=True),
    RateBand(MPEG2_RATES, 8000, 160000, over=44100),
    RateBand(MPEG1_RATES, 32000, 320000, under=22050),
)
# MP3 aims at MPEG 2.5's 12 kHz where the others take 16 kHz. From 28k, CBR at each rate LAME takes
# (same step = same size; `bench/quality_rates.py --format mp3 --budgets 32,40,48,56,64 --stereo-budgets
# 64,80,96 --rates 22050,24000,32000,44100,48000 --sources man,woman,f3,m5,en,speech,sparse,music`,
# ffmpeg 5.1, LAME 3.100; mean wideband PESQ over 5 espeak-ng voices, mixed and sparse speech, at
# 22.05/24/32/44.1/48 kHz): 32k 3.38/3.44/3.59/3.31/3.23; 40k 3.60/3.68/3.87/3.88/3.84; 48k
# 3.85/3.87/4.06/4.15/4.14; 56k 4.07/4.07/4.20/4.27/4.26; 64k 4.23/4.24/4.34/4.33/4.35. Music (LSD dB,
# lower is better, 44.1 kHz source): 32k mono 17.3/17.4/19.8/20.7; 48k mono 9.8/4.8/5.7/6.8; 64k stereo
# 10.1/5.8/13.1/14.8; 80k stereo 9.3/4.7/7.0/8.7; 96k stereo 9.1/3.8/6.1/5.6. So 24 kHz, not 22.05, at
# 32k: speech as good or better for each voice (men +0.08 to +0.12, women +0.00 to +0.02, mixed -0.01,
# sparse +0.09), music far closer in stereo (5.8 against 10.1 dB). 32 kHz scores higher still on speech
# there (+0.2) but worse on music (13.1 dB); 48 kHz at 48k scores higher on every voice (+0.02 to +0.18)
# but worse on mono music (6.8 against 5.7 dB): both left as they were. 40k: 32 kHz and 44.1 kHz within
# 0.01 on average (men's voices prefer 32 kHz, women's 44.1), music better at 32 kHz.
MP3_RATE_LADDER = ((12000, 8000), (20000, 12000), (28000, 16000), (40000, 24000), (56000, 32000))

# MP3: CBR on LAME's steps, and LAME's ABR (-abr 1 -b:a N, any whole kbit/s) at the budget where
# the step under it would use less than plan.STEP_USE of it and ABR's bitrate is under 28k (8-16 kHz).
# Measured (ffmpeg 5.1, LAME 3.100) on 120-s espeak-ng speech and the music-like source at equal size,
# wideband PESQ (LSD for music), the plan's sample rates: CBR on a step scored as well as ABR or better
# (16k: 2.09 against 1.84; 24k: 2.86 against 2.60; 32-64k within 0.08); between steps, ABR at the
# budget scored above CBR on the step below once that step used under about 90 % of the budget (10-14k:
# 1.67-1.97 against 1.59; 22k: 2.46 against 2.11; 72k: 4.39 against 4.33; speech with long pauses and
# music gained more, dense speech at 17-19k a little less). LAME's VBR (-q:a; a fractional q is taken)
# scored best at the same size (up to +0.2 on speech, far lower LSD on music), but its size per q
# differs by 30 % between contents (q 9 at 16 kHz: speech 30k, sparse speech 23k, music 27k) and it
# cannot go under about 18k: no size a first encode can aim at.
#
# ABR overshoots its target, by the voice (`bench/calibrate_sizes.py --format mp3`: 120-s sources,
# six espeak-ng voices alone, four 15-s clips of dense speech): under 28k, 1.13-1.32 on speech (one
# voice alone 1.13-1.25; dense clips up to 1.32 at 8-11k), speech with long pauses 1.02-1.14, music
# 1.02-1.14. A stereo source is made mono at these rates and may be a voice, so both classes are sized
# alike, each band for the top of what was measured there (HEADROOM absorbs 1.5 % more). Speech then
# uses 87-100 % of its budget, pauses and music 77-93 %, before LAME rounds the bitrate down to whole
# kbit/s (up to 12 % at 8k): end to end, speech 80-95 % (median 90 %), first encodes all fitting
# (before, CBR alone: 57-93 %, median 80 %). From 28k (22.05 kHz and up) ABR strays by the voice far
# more (1.02-1.32: the women's voices 1.02-1.10, the men's 1.15-1.32): sized for the top a first encode
# would use no more of the budget than the steps there (14-25 % apart) do, so a first encode there is
# CBR on the step (it always fits), and from 43k the fill (transcode.py) takes ABR above it: its first
# ABR pass sized for the top (so it fits too), the next, when that used under FILL_BELOW, by what it
# measured.
# Above 28k ABR's sample rate is not CBR's: at the rate CBR's ladder gives its target (under the size
# it makes) it scored 0.3-0.6 PESQ under CBR at the same size (ABR 33k at 22.05 kHz: 3.28 against
# CBR 40k at 32 kHz: 3.85); 32 kHz from a 32k target and 48 kHz from 43k scored best (ABR at 22.05, 32,
# 48 kHz on three voices). At those rates ABR scored 0.04-0.09 under CBR at the same size at 32 kHz,
# within 0.01 at 48 kHz. End to end (six voices alone, speech, sparse speech; the fill's ABR against
# CBR on the step under the budget, 85-91 % of it), ABR at 48 kHz scored higher (budgets of 75k: ABR
# 58-70k, 94-97 % of the budget, +0.05 to +0.08 PESQ), but at 22.05 and 32 kHz lower although fuller
# (36k: ABR 28-31k, 94-98 %, -0.14 to +0.04, median -0.07; 44k: 32-40k, -0.09 to 0, median -0.04): the
# fill takes ABR only from 43k, where it codes at 48 kHz, and leaves the step between 28k and 43k.
MP3_CBR = TargetFormat(
    name="mp3", extension="mp3", muxer="mp3", encoder="libmp3lame", codec="mp3", container="mp3",
    content_type="audio/mpeg", floor=8000, ceiling_per_channel=160000, steps=MP3_STEPS,
    # An ID3 header (10 bytes without tags) and the Xing frame; the encoder's delay and padding add
    # 2-3 frames at the bitrate: CBR came out 388-470 bytes over at 8-64k, 2.3-3.9 KB at 320k (32-44.1 kHz).
    fixed_overhead=512, padding_seconds=0.1, rate_ladder=MP3_RATE_LADDER, rate_bands=MP3_RATE_BANDS,
    # LAME's CBR is exact: a frame of the step's size every 576 or 1152 samples (the payload is the
    # target to 0.1 %, the rest is the container and padding above)
    rate_control="cbr", bitrate_factor=1.0)
# Above 28k (`calibrate_sizes.py --format mp3 --control abr --bitrates 28,30,32,36,40,42,43,48,56,64,80,96,128`,
# at MP3_ABR_RATE_LADDER's rates), the top of each band, a man's voice (en, en+m5) every time: 28-32k
# (22.05 kHz) 1.26; 32-43k (32 kHz) 1.32; 43-56k (48 kHz) 1.29; 56-80k 1.25; 80-128k 1.23; 128k 1.19.
# Women's voices 1.02-1.10, sparse speech 1.02-1.10, music 1.0-1.06; a voice in stereo from 64k
# (stereo, identical channels) 0.81-0.86.
MP3_ABR_BANDS = ((12000, 1.30), (20000, 1.26), (28000, 1.225), (32000, 1.26), (43000, 1.32), (56000, 1.29),
                 (80000, 1.255), (128000, 1.23))
MP3_ABR_RATE_LADDER = (*MP3_RATE_LADDER[:3], (32000, 22050), (43000, 32000))
MP3_ABR = replace(MP3_CBR, steps=(), rate_control="abr", blind_ceiling_per_channel=27000, fill_from_per_channel=43000,
                  rate_ladder=MP3_ABR_RATE_LADDER,
                  factor_bands=MP3_ABR_BANDS, speech_factor_bands=MP3_ABR_BANDS, bitrate_factor=1.19)
MP3 = replace(MP3_CBR, between_steps=MP3_ABR)

# Native AAC's -b:a (its own average bitrate, any bit/s; one encoder for m4a and ADTS).
#
# The sample rate per bitrate: 16 kHz under 21k per channel, the source's (up to 48 kHz) from there.
# Measured (ffmpeg 5.1; `bench/quality_rates.py`, and `--budgets 18,20,21,22,23,24,26,28 --rates
# 16000,48000`) at equal file size, each rate's -b:a matched to that size, on seven speech sources (the
# bench's mixed voices, its sparse speech, five espeak-ng voices alone) and the music-like source:
# at 48 kHz the encoder cannot come down to 16k at all (-b:a 6k still makes 17k) and its wideband PESQ
# is 0.1-0.6 under 16 kHz's at 18-20k on every voice; from a 22-23k budget (-b:a about 21k at 48 kHz)
# it scores as well on average (women's voices +0.3-0.5, two men's -0.1-0.4). 22.05, 24 and 32 kHz,
# the old ladder's steps at 28-56k, never beat both: at 32k mean PESQ (of the first four speech
# sources) 2.80-2.86 against 2.94 at 48 kHz, at 48k 3.28 at 32 kHz against 3.41; music's spectral
# distance at 32k 6.6 dB at 44.1 kHz
# against 7.6 at 22.05, stereo at 64k 5.9 against 6.8 (22.05 kHz), at 96k 4.9 against 5.4 (32 kHz).
# From about 28k, where the encoder's own lowpass (15/32 of the bitrate less 5.5 kHz) passes 8 kHz,
# 16 kHz still scores higher PESQ on some voices, but PESQ hears nothing above 8 kHz, and the music's
# distance at 16 kHz is three times 44.1's (20.7 dB at 32k). Keeping the source's rate is what the
# plain `ffmpeg -c:a aac -b:a N` does.
AAC_RATE_LADDER = ((21000, 16000),)
#
# Payload / target under that ladder (`bench/calibrate_sizes.py --format m4a`: 120-s sources, six
# voices alone, four dense clips; and `--content voices --content dense --content speech --content
# music-mono --bitrates 21,23,25,27,29,34`): 1.01-1.02 at 16-20k (16 kHz) on everything. At 48 kHz the
# encoder first comes out under its target: 21k 0.98-1.05, 22k 0.93-1.02, 23-24k 0.89-1.00, 25-27k
# 0.86-0.97, 28k 0.93-1.01; then over it: 29-30k 0.95-1.04, 32-40k 1.00-1.06, 44k 1.01-1.04, 48-64k
# 1.00-1.03. One voice (en+m5, a man's) is the top of nearly every band, 3-5 % over the others. Mono
# from 72k climbs: speech 1.02-1.06 at 72-80k, 1.04-1.08 at 96-112k, 1.05-1.14 at 128k; mono music
# 1.11 at 96-128k (sized as speech: such a source may take a re-plan there). Stereo outputs, music and
# speech: 1.01-1.03 at 64-80k, 0.99-1.06 at 96-112k, 0.98-1.04 from 128k. Each band is the top of what
# was measured in it (HEADROOM absorbs 1.5 % more), except where that would fall more than 1.4 % under
# the band below (the dip at 22-28k is followed only that far down): the planner clamps a bitrate to
# its ceiling (the source's, --bitrate) without sizing it again, so a lower band with a factor higher
# than HEADROOM covers would plan a file over its budget. Speech at 23-28k then comes out at 85-95 %
# of the budget, and the fill encodes it again higher where under 92 %. End to end (`bench/
# calibrate_sizes.py --prepare --format m4a`, 15 sources x 13 budgets of 16-128k): first encodes
# fitting 193/195 (the misses: mono music at 96 and 128k, sized as speech), budget use median 95.7 %,
# at least 92 % in 182/195. Under 92 %: at 24k on the short sources (15-45 s), 90-92 % in one encode:
# 48 kHz cannot take 21k there, so the plan stays at 16 kHz at 20.9k; and at 28-30k, 88-92 % after the
# fill's passes: at 48 kHz the encoder's size jumps about 15 % between -b:a 27k and 29k, and the fill
# keeps the fuller output that fits. ADTS (`--prepare --format aac`, 9 sources x 10 budgets): first
# encodes 90/90, median 95.9 %, at 24k 89-90 % (the same step, wider: 7-byte headers at 48 kHz).
# Its VBR (-q:a) is no better: at the same size PESQ 2.48 against 2.62 (speech, 24k), 3.21 against
# 3.14 (48k), music far worse (LSD 22.6 against 9.4 at 32k), and its size per q is steep and not
# monotonic (q 0.25: 19k, q 0.41: 40k; 0.79: 143k, 0.87: 140k on music).
AAC_MONO_UNDER_64K = ((21000, 1.025), (23000, 1.04), (25000, 1.026), (28000, 1.012),
                      (29000, 1.01), (30000, 1.035), (32000, 1.045), (36000, 1.055), (40000, 1.065),
                      (44000, 1.055), (48000, 1.045), (56000, 1.035), (64000, 1.03))
# A mono source is sized as speech up to the mono ceiling (128k), and past it (a voice made stereo by
# --channels 2) as at 128k: no lower factor above the ceiling for a plan clamped to it to fall back on.
AAC_SPEECH_BANDS = (*AAC_MONO_UNDER_64K, (72000, 1.035), (88000, 1.06), (128000, 1.085), (10**9, 1.14))
AAC_BANDS = (*AAC_MONO_UNDER_64K, (80000, 1.03), (128000, 1.06))
AAC_FACTOR = 1.045

FORMATS: dict[str, TargetFormat] = {
    "ogg": TargetFormat(
        name="ogg", extension="ogg", muxer="ogg", encoder="libopus", codec="opus", container="ogg",
        content_type="audio/ogg", floor=6000, ceiling_per_channel=64000,
        # Ogg pages cost 77.4 bytes/s whatever the bitrate (measured on CBR, 6 to 64 kbit/s); the
        # headers (OpusHead, OpusTags without tags) 155-180 bytes: 512 leaves room, and no more, since
        # a short voice note's budget is small enough for 4 KB to be a tenth of it.
        fixed_overhead=512, overhead_per_second=80.0, stereo_min=32000,
        # Opus always codes at 48 kHz; the header keeps the input rate for players
        fixed_sample_rate=48000, speech_below=24000,
        # Constrained VBR's payload against its target, over the size model's container bytes (ffmpeg
        # 5.1, libopus 1.3; `bench/bench_quality.py --calibrate`, and a second speech recording):
        # under 12k (SILK), speech 0.88-0.94 (under 9k) and 0.92-0.96 (9-12k), speech with long pauses
        # 0.77-0.86, music-like 0.97-1.0
        # (1.16 at 6k); 12-16k, where libopus moves from SILK to hybrid (where exactly depends on the
        # content), speech 0.95-1.04, music-like 1.01-1.02; from 16k, 0.99-1.03 on all of them. Each
        # band is sized for the top of what its content class showed (HEADROOM absorbs 1.5 % more), so
        # the first encode fits and speech still uses most of the budget; a mono music source, sized
        # as speech, may take a re-plan under 12k.
        rate_control="cvbr", factor_bands=((12000, 1.0), (16000, 1.04)),
        speech_factor_bands=((9000, 0.93), (12000, 0.95), (16000, 1.04)),
        bitrate_factor=1.02, bitrate_quantum=100),
    "mp3": MP3,
    "m4a": TargetFormat(
        name="m4a", extension="m4a", muxer="ipod", encoder="aac", codec="aac",
        container="mov,mp4,m4a,3gp,3g2,mj2", content_type="audio/mp4", floor=16000,
        # the moov box about 770 bytes, and 4 bytes a frame (its sample size table): measured 3-120 s,
        # 16 and 48 kHz; the encoder's priming and last frames: up to 2 frames (0.13 s at 16 kHz)
        ceiling_per_channel=128000, fixed_overhead=1024, bytes_per_frame=4.1, padding_seconds=0.13,
        rate_ladder=AAC_RATE_LADDER, rate_control="abr", factor_bands=AAC_BANDS, speech_factor_bands=AAC_SPEECH_BANDS,
        bitrate_factor=AAC_FACTOR, bitrate_quantum=100),
    "aac": TargetFormat(
        name="aac", extension="aac", muxer="adts", encoder="aac", codec="aac", container="aac",
        content_type="audio/aac", floor=16000, ceiling_per_channel=128000,
        # a 7-byte header a frame and nothing else
        fixed_overhead=64, bytes_per_frame=7.0, padding_seconds=0.13, rate_ladder=AAC_RATE_LADDER, rate_control="abr",
        factor_bands=AAC_BANDS, speech_factor_bands=AAC_SPEECH_BANDS, bitrate_factor=AAC_FACTOR,
        bitrate_quantum=100),
    "amr": TargetFormat(
        name="amr", extension="amr", muxer="amr", encoder="libopencore_amrnb", codec="amr_nb",
        container="amr", content_type="audio/amr", floor=4750, ceiling_per_channel=12200,
        steps=AMR_STEPS, fixed_overhead=64, bytes_per_frame=1.0, frame_samples=160, max_channels=1,
        stereo_min=10**9, fixed_sample_rate=8000),
}

FORMAT_NAMES = tuple(FORMATS)


def get_format(name: str) -> TargetFormat:
    try:
        return FORMATS[name.lower().lstrip(".")]
    except KeyError:
        raise UsageError(f"unknown {setting('format')} {name!r}: choose one of {', '.join(FORMAT_NAMES)}",
                         field="format") from None


# What the API accepts as it is: (ffprobe container, codec) -> the format it is, for files we keep.
ACCEPTABLE_AS_IS: dict[tuple[str, str], str] = {
    ("mp3", "mp3"): "mp3",
    ("ogg", "opus"): "ogg",
    ("mov,mp4,m4a,3gp,3g2,mj2", "aac"): "m4a",
    ("aac", "aac"): "aac",
    ("amr", "amr_nb"): "amr",
}
