"""sipload.metrics"""
