"""audiopipe: any audio in, a file the Lancepilot audio-message API accepts out, sent exactly once.

The everyday API is here; the stages are importable on their own (``audiopipe.preparation.probe``
and the rest are modules)::

    from audiopipe import PrepareSettings, prepare, probe

    info = probe("talk.flac")
    result = prepare("talk.flac", "ready/", PrepareSettings(format="mp3", max_size=5_000_000))
"""

from __future__ import annotations

from audiopipe.errors import AudiopipeError, FFmpegError, InputError, PrepareError, ToolMissingError, UsageError
from audiopipe.preparation.formats import FORMATS, TargetFormat
from audiopipe.preparation.inputs import collect_inputs
from audiopipe.preparation.pipeline import prepare_file, prepare_many
from audiopipe.preparation.plan import DoesNotFit, EncodePlan, plan
from audiopipe.preparation.probe import AudioStream, MediaInfo, probe
from audiopipe.preparation.results import OutputFile, PrepareAction, PrepareOutcome, PrepareResult
from audiopipe.preparation.segment import prepare, to_segment
from audiopipe.preparation.settings import PrepareSettings
from audiopipe.preparation.sniff import Sniff, sniff
from audiopipe.version import __version__

__all__ = [
                     "FORMATS",
                     "AudioStream",
                     "AudiopipeError",
                     "DoesNotFit",
                     "EncodePlan",
                     "FFmpegError",
                     "InputError",
                     "MediaInfo",
                     "OutputFile",
                     "PrepareAction",
                     "PrepareError",
                     "PrepareOutcome",
                     "PrepareResult",
                     "PrepareSettings",
                     "Sniff",
                     "TargetFormat",
                     "ToolMissingError",
                     "UsageError",
                     "__version__",
                     "collect_inputs",
                     "plan",
                     "prepare",
                     "prepare_file",
                     "prepare_many",
                     "probe",
                     "sniff",
                     "to_segment",
]
