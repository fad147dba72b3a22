from setuptools import find_packages, setup

setup(
    name="hvd_compress",
    version="0.1.0",
    description="Communication-efficient data-parallel training: bit-packed gradient "
                "compression for Horovod and torch.distributed",
    packages=find_packages(include=["hvd_compress", "hvd_compress.*"]),
    package_data={"hvd_compress._native": ["kernels.c"]},  # compiled on first use
    python_requires=">=3.9",
    install_requires=["numpy"],
    extras_require={
        "torch": ["torch>=2.1", "horovod==0.28.1"],
        "tf": ["tensorflow-cpu>=2.16", "tf-keras", "horovod==0.28.1"],
        "ray": ["ray[train]>=2.9"],
        "dev": ["pytest", "pytest-timeout", "hypothesis", "scikit-learn", "tqdm", "matplotlib"],
    },
)
