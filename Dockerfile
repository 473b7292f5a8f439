# GPU image for real runs: TensorFlow with CUDA from the `gpu` extra.
FROM python:3.11-slim
WORKDIR /opt/tfinfo
COPY . .
RUN pip install --no-cache-dir -e ".[gpu]"
ENV TF_CPP_MIN_LOG_LEVEL=2
ENTRYPOINT ["tfinfo-transfer"]
CMD ["--workdir", "/runs/default"]
