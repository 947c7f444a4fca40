"""sipload.report"""
