"""sipload.providers"""
