"""The "Python 3 (ipy_parallel)" kernelspec: ipykernel with the extension loaded; `python -m ipy_parallel.kernel install`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

__all__ = ["KERNEL_NAME", "kernel_spec", "install"]

KERNEL_NAME = "ipy_parallel"


def kernel_spec(executable: str = sys.executable) -> dict:
    """The kernel.json contents. kernel/ipy_parallel/kernel.json in the repository is this with
    executable="python", which Jupyter replaces by the Python that runs it."""
    return {
        "argv": [executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--ext=ipy_parallel"],
        "display_name": "Python 3 (ipy_parallel)",
        "language": "python",
        "metadata": {"debugger": True},
    }


def install(user: bool = False, prefix: str | None = None) -> str:
    """Install the kernelspec for this Python (sys.executable); returns where it went."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager
    except ImportError:
        raise SystemExit(
            "ipy_parallel.kernel install needs jupyter_client (and ipykernel to run the kernel): "
            "pip install 'ipy_parallel[notebook]'"
        ) from None

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(kernel_spec(), indent=2) + "\n", encoding="utf-8")
        return KernelSpecManager().install_kernel_spec(tmp, KERNEL_NAME, user=user, prefix=prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipy_parallel.kernel", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install the kernelspec")
    where = inst.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for the current user")
    where.add_argument("--sys-prefix", action="store_true", help=f"into this environment ({sys.prefix})")
    where.add_argument("--prefix", help="under this prefix")
    args = parser.parse_args(argv)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = install(user=args.user, prefix=prefix)
    print(f"Installed kernelspec {KERNEL_NAME!r} (Python 3 (ipy_parallel)) in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
