"""The one typed configuration object, validated at start; errors name the dotted key."""

from bdn.config.model import *  # noqa: F403
