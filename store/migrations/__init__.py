"""Numbered schema migrations, one list per engine; version N is the same schema on both engines."""
