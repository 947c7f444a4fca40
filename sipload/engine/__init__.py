"""sipload.engine"""
