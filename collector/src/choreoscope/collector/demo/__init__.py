"""`choreoscope demo`: a small shop whose services talk over Kafka, watched by Choreoscope.

The shop's services (shop/) are ordinary kafka-python programs wrapped with
choreoscope.instrumentation, the way a user would write them; runner.py starts the embedded
broker, the services, the collector and the dashboard, and stops them all.
"""
