"""The thin Faust shell. Only this package imports faust.

Layout follows Faust's examples: :mod:`.app` defines the App and nothing else; topics, tables,
agents and web pages import it, never the reverse.
"""
