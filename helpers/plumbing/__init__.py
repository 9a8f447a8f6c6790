"""Plumbing: input checks, atomic files and locks, the downloader, process memory. Imports nothing from the course."""
