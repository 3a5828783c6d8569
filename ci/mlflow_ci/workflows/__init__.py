"""What the GitHub workflows call: the sticky PR comment, ``expect``, and the workflow linters."""
