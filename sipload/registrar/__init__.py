"""sipload.registrar"""
