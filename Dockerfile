# The web image: gunicorn (and beat, in docker-compose.yml). requirements/web.txt only: no torch, no diffusers,
# no test tools; the build fails if torch got in. Celery workers use Dockerfile.worker.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 LORASITE_VAR_DIR=/var/lib/lorasite
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY requirements/ requirements/
COPY constraints.txt ./
RUN pip install --no-cache-dir -r requirements/web.txt -c constraints.txt \
    && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'diffusers', 'pytest')))"
COPY . .
RUN DJANGO_DEBUG=1 python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "lorasite.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "120"]
