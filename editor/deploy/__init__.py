"""Deployment helpers: the nginx configuration that `manage.py nginx_conf` prints and
docker/nginx/collab.conf holds (docs/DEPLOY.md)."""
