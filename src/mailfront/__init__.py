__version__ = "0.1.0"
NGINX_COMPAT = "1.31.5"
