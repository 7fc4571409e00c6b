"""A bare Flask hello (issue 15), served by the same gunicorn configuration as the app: the floor of /bench/hello."""

from flask import Flask

app = Flask(__name__)
app.add_url_rule("/bench/hello", "hello", lambda: "Hello from Flask")
