"""Helpers for testing pytxmr and jobs written for it.
"""
