"""Stage 1: probe an input, decide whether it can go as it is, otherwise plan, encode and verify a file
the API accepts. Nothing here knows about contacts, ledgers or HTTP.

The modules, roughly in the order a file meets them:

- ``inputs``: which files to prepare (folders searched), and the output name each gets
- ``opening``: how ffprobe/ffmpeg open an input (plain files, real containers only)
- ``probe``, ``sniff``: what a file is, to ffprobe and to the server's libmagic
- ``settings``, ``policy``: how to prepare, and whether a file can be sent as it is
- ``formats``, ``encoders``: the target formats as data, and whether this ffmpeg can make them
- ``plan``: the bitrate and sample rate that fit the byte budget (pure); ``sizing``: the size model's
  arithmetic it plans by (expected bytes, the bitrate a budget holds, rates and steps)
- ``encode``, ``transcode``, ``voicenote``: the ffmpeg runs, the fit loop, trim and split; ``fill``:
  encoding again higher when an output that fits left much of its budget unused
- ``outputs``, ``reuse``, ``cache``: writing without destroying, and results without work
- ``results``: what comes back; ``pipeline``: prepare_file/prepare_many, running all of the above
- ``segment``: the pydub edge (``audiopipe.prepare``)

The package itself exports nothing, so that each name above is always the module.
"""
