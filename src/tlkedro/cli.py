"""The project's ``kedro run``: Kedro's own, with configuration errors printed as one short message.

Kedro loads ``<package>.cli`` and lets its commands override the built-in ones. This ``run`` has every
option of Kedro's and one more, ``--verbose``/``-v``. An error the user fixes in the configuration or the
data (a bad parameter, an unknown component name, a missing file or dataset) ends the run with its
message, which names the key and the fix, and exit code 1, instead of a full-screen traceback; with
``--verbose`` the traceback is shown as before. Other exceptions (bugs) always keep their traceback.
"""

from __future__ import annotations

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.io import DatasetError
from kedro.validation.exceptions import ParameterValidationError

from tlkedro.errors import ConfigurationError

#: What ``kedro run`` reports as a message: the project's configuration errors, a catalog dataset that
#: cannot be loaded or saved (a missing file or folder), and Kedro's validation of typed parameters.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigurationError,
    DatasetError,
    ParameterValidationError,
)

_HINTS = {
    DatasetError: "check that dataset's entry in conf/<env>/catalog*.yml, or run the pipeline that "
    "writes it first",
}


def user_error_message(error: Exception) -> str:
    """The message ``kedro run`` prints for a user error: its type, its text and how to see more."""
    hint = next((text for kind, text in _HINTS.items() if isinstance(error, kind)), None)
    lines = [f"{type(error).__name__}: {error}"]
    lines += [str(note) for note in getattr(error, "__notes__", ())]
    if hint:
        lines.append(f"Fix: {hint}.")
    lines.append("Run `kedro run --verbose ...` for the full traceback.")
    return "\n".join(lines)


class _RunCommand(click.Command):
    """Kedro's ``run``, turning ``USER_ERRORS`` into a ``click.ClickException`` unless ``--verbose``."""

    def invoke(self, ctx: click.Context) -> object:
        verbose = ctx.params.pop("verbose", False)  # Kedro's callback does not take it
        try:
            return super().invoke(ctx)
        except USER_ERRORS as error:
            if verbose:
                raise
            raise click.ClickException(user_error_message(error)) from None


run = _RunCommand(
    name="run",
    callback=kedro_run.callback,
    params=[
        *kedro_run.params,
        click.Option(
            ["--verbose", "-v"],
            is_flag=True,
            help="Show the full traceback of a configuration error (a bad parameter, an unknown "
            "name, a missing file), which is otherwise printed as its message alone.",
        ),
    ],
    help=kedro_run.help,
    short_help=kedro_run.short_help,
    context_settings=kedro_run.context_settings,
)


@click.group(name="tlkedro")
def cli() -> None:
    """tlkedro's project commands (they override Kedro's built-in ones of the same name)."""


cli.add_command(run)
