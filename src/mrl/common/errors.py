"""The one exception type for bad user input: its message is the single line the user sees."""


class ConfigError(ValueError):
    """A configuration value, data file or model folder the run cannot use.

    The message must be one sentence that names the offending field (or file) and the fix.
    `mrl.run.train.main` prints it without a traceback and exits with status 2.
    """
