"""The stellwerk command line."""
