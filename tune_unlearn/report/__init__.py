"""What a study leaves behind: the Pareto front, report.md, figures, the leaderboard,
the all-in cost, and the commands that read a study back.

Nothing is imported here: each module is imported by name, so that importing one
layer never pulls in another."""
