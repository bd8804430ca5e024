"""What ``groundwire eval`` and ``groundwire bench`` share: statistics, tables, plots,
progress bars, result files, and the server they measure (a running one, or one started
in-process on embedded defaults)."""
