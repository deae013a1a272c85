"""cytopipe: flow cytometry pipeline for B-cell depletion and reconstitution after CD19 CAR-T."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cytopipe")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
