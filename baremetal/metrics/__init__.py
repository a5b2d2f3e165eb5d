"""Prometheus text: one writer for the watchdog's and the gateway's pages, one reader for engines' pages."""
