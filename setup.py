"""The C extension of the package (the rest of the build is in pyproject.toml): the Segment
reader's common case (src/stellwerk/tracking/_segment_native.c; docs/tracking.md, "tracking6").
`pip install` builds it with the machine's C compiler and Python's headers. Without them the
install still succeeds (`optional`: setuptools warns) and the server reads with the Python
reader, saying so at its start; STELLWERK_SEGMENT_NATIVE=0 chooses the Python reader too."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "stellwerk.tracking._segment_native",
            sources=["src/stellwerk/tracking/_segment_native.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
