"""sipload.transport"""
