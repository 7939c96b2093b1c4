"""Completion webhooks: a job uploaded with callback_url is POSTed, signed, when it ends.

targets: which URLs may be called (no SSRF); signature: the Hopper-Signature header;
sender: one attempt to a checked address; deliveries: rounds, retries and their records.
"""
