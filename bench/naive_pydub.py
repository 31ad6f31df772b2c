"""The naive way, for the memory comparison: decode the whole file into a pydub AudioSegment, export MP3.

    python bench/naive_pydub.py IN.wav OUT.mp3
"""

import sys

from pydub import AudioSegment

AudioSegment.from_file(sys.argv[1]).export(sys.argv[2], format="mp3")
