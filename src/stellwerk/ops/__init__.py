"""Operations: metrics and logging of a running Stellwerk process."""
