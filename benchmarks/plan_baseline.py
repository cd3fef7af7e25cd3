"""The floor for ``batchspec plan --format json``: a plain Python script that writes the same task
lines for the planning benchmark's spec (``plan_bench.py``) and nothing else.

It globs ``DIR/inputs/*.mp4``, sorts the names, shell-quotes each value, formats the command,
hashes an id and prints one JSON line per task, exactly as batchspec prints its ``"tasks"``
list; no spec, no schema, no templates, no checks. The benchmark compares both outputs line
by line before it compares their costs.

Run: ``python benchmarks/plan_baseline.py DIR [BITRATE]`` (bitrate default: 192k).
"""

import glob
import hashlib
import json
import os
import re
import shlex
import sys


def main() -> None:
    folder = sys.argv[1]
    bitrate = sys.argv[2] if len(sys.argv) > 2 else "192k"
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(folder), "inputs", "*.mp4")))
    unsafe = re.compile(r"[^A-Za-z0-9_-]+")
    out = sys.stdout
    out.write('  "tasks": [')
    for i, name in enumerate(names):
        stem = name[: -len(".mp4")]
        source = "inputs/" + name
        digest = hashlib.blake2b(source.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
        task = {
            "id": f"{(unsafe.sub('_', stem).strip('_-') or 'task')[:55]}-{digest}",
            "command": f"ffmpeg -hide_banner -y -i {shlex.quote(name)} -vn -b:a {shlex.quote(bitrate)} "
                       f"{shlex.quote(stem)}.mp3",
            "inputs": [{"source": source, "path": name}],
            "outputs": [f"{stem}.mp3"],
        }
        out.write(("," if i else "") + "\n    " + json.dumps(task, ensure_ascii=False))
    out.write("\n  ]\n}\n" if names else "]\n}\n")


if __name__ == "__main__":
    main()
