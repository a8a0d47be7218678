"""The C extension of the package (the rest of the build is in pyproject.toml): the Segment
reader's common case (src/stellwerk/tracking/_segment_native.c; docs/tracking.md, "tracking6").
`pip install` builds it with the machine's C compiler and Python's headers; with
STELLWERK_SEGMENT_NATIVE=0 the server reads with the Python reader instead."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "stellwerk.tracking._segment_native",
            sources=["src/stellwerk/tracking/_segment_native.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        )
    ]
)
