"""Source text of small plugins that tests drop into a plugin directory."""

from __future__ import annotations

import textwrap
from pathlib import Path

RECORDER = '''
import os, time
import pamd

RECORD = os.environ.get("TEST_PAMD_RECORD", os.devnull)

def make(name, schedule, sleep=0.0):
    class Recorder(pamd.Monitor):
        timeout = 30
        retries = 0
        async def run(self, ctx):
            import anyio
            start = time.time()
            if sleep:
                await anyio.sleep(sleep)
            with open(RECORD, "a") as f:
                f.write(f"{self.name} {ctx.scheduled_at.timestamp():.3f} {start:.3f} {time.time():.3f} {ctx.epoch}\\n")
            return []
    Recorder.name = name
    Recorder.schedule = schedule
    return Recorder()

@pamd.hookimpl
def register_monitors(register):
    register(make("every_second", "* * * * * *"))
    register(make("slow", "* * * * * *", sleep=float(os.environ.get("TEST_PAMD_SLOW", "2.5"))))
'''

BROKEN_IMPORT = "import pamd\nraise RuntimeError('boom at import')\n"

MISSPELLED_HOOK = '''
import pamd

@pamd.hookimpl
def register_monitor(register):
    pass
'''

DUPLICATE_FUEL = '''
import pamd

class Fuel(pamd.Monitor):
    name = "fuel"
    async def run(self, ctx):
        return []

@pamd.hookimpl
def register_monitors(register):
    register(Fuel())
'''


def plugin_dir(root: Path, **files: str) -> Path:
    """A plugin directory (mode 0755) holding ``name.py`` for each keyword argument."""
    directory = root / "plugins"
    directory.mkdir(mode=0o755, exist_ok=True)
    directory.chmod(0o755)
    for name, source in files.items():
        (directory / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return directory
