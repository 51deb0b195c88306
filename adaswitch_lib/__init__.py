"""adaswitch-kit's helper library: models, samplers and losses, and the runs behind the paper's
tables and figures (README.md)."""

import logging

# bitsandbytes' CPU backend (imported by peft and by 8-bit AdamW) warns at import, on CPUs with
# AVX512-BF16, about a 4-bit kernel the kit never uses
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
