"""Command lines that fail in one line: bad input or environment is reported as
``error: what, where, what to do`` on stderr with exit status 2, never a traceback."""
import argparse
import math
import sys


class UserError(Exception):
    """Bad input or environment, reported as one line (what, where, what to do)."""


def run_cli(main):
    """Run ``main()``; a ``UserError`` becomes one line on stderr and exit status 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command with --resume to continue", file=sys.stderr)
        raise SystemExit(130)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with whole option names only (``--encoder x`` is never taken for
    ``--encoder_weights x``) and its errors as a ``UserError``: one line, exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


def _number(kind, low=None, high=None, low_open=False, high_open=False, multiple_of=None):
    """An argparse type: a finite ``kind`` within the bounds, else a clear message."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '>='} {low}")
        if high is not None and (value > high or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"{text} must be {'<' if high_open else '<='} {high}")
        if multiple_of and value % multiple_of:
            raise argparse.ArgumentTypeError(f"{text} must be a multiple of {multiple_of}")
        return value
    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


positive_int = _number(int, low=1)
non_negative_int = _number(int, low=0)
positive_float = _number(float, low=0, low_open=True)
non_negative_float = _number(float, low=0)


def add_training_options(parser, batch_size, epochs, lr):
    """The template's training options, with its defaults for the script: the group every
    student recognises."""
    group = parser.add_argument_group("the template's options (the assignment's defaults)")
    group.add_argument("--logdir", type=str, required=True, help="Directory to save logs")
    group.add_argument("--batch_size", type=positive_int, default=batch_size, help="Batch size (default: %(default)s).")
    group.add_argument("--epochs", type=positive_int, default=epochs,
                       help="Number of epochs for training (default: %(default)s).")
    group.add_argument("--lr", type=positive_float, default=lr, help="Learning rate (default: %(default)s).")
    group.add_argument("--weight_decay", type=non_negative_float, default=5e-4,
                       help="Weight decay (default: %(default)s).")
    group.add_argument("--print_every", type=positive_int, default=80,
                       help="Number of minibatches after which we print the loss (default: %(default)s).")
    group.add_argument("--seed", type=non_negative_int, default=42, help="Random seed (default: %(default)s).")
    return group


def add_execution_options(parser):
    """How the run executes and where it keeps its files; none of these changes the math
    beyond the rounding of the chosen precision."""
    group = parser.add_argument_group("execution and run files")
    group.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), default="auto")
    group.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                       help="Mixed precision. auto: measured at the start of the run (a few training steps of each "
                            "candidate, remembered per machine) among fp32 and the native autocast dtype of the "
                            "device (default: %(default)s).")
    group.add_argument("--channels_last", choices=("auto", "on", "off"), default="auto",
                       help="Memory format of images and weights; auto: measured with --amp (default: %(default)s).")
    group.add_argument("--plain", action="store_true",
                       help="The template's execution: fp32, contiguous tensors (overrides --amp).")
    group.add_argument("--compile", action="store_true", help="torch.compile the model.")
    group.add_argument("--resume", action="store_true", help="Continue the run in --logdir.")
    return group


def reachable(host, port=443, timeout=3.0):
    """Whether ``host`` answers: checked before a download, so that an offline machine
    gets one clear line at once instead of a library's retries."""
    import socket
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def multiple_of_16(text):
    """0 (off) or a positive multiple of 16: the UNet pools four times."""
    return _number(int, low=0, multiple_of=16)(text)


def fraction(low_open, high_open):
    """A number in [0, 1] with either end open."""
    return _number(float, low=0, high=1, low_open=low_open, high_open=high_open)
