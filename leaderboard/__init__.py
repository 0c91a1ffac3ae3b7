"""Leaderboard: metric tables, the static HTML page, submissions, and the regression gate."""
